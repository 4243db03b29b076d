"""``claudemesh`` entry point: the one place where errors become exit codes (DESIGN §4).

Subcommands are imported only when invoked (click's lazy group pattern), so
``claudemesh send`` loads the send path and nothing else: scripts and hooks call it
constantly, and its start-up time is a measured target (bench/cli_send.py).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Final

import click

from claudemesh import __version__
from claudemesh.cli.output import PRINTER
from claudemesh.errors import ClaudemeshError, ExitCode

__all__ = ["cli", "main"]

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, the shell's convention, not an ExitCode
LAZY_COMMANDS: Final = {
    "send": "claudemesh.cli.send:send",
    "inbox": "claudemesh.cli.messages:inbox",
    "peers": "claudemesh.cli.messages:peers",
    "profile": "claudemesh.cli.messages:profile",
    "topic": "claudemesh.cli.topics:topic",
    "group": "claudemesh.cli.topics:group",
    "events": "claudemesh.cli.messages:events",
    "status": "claudemesh.cli.status:status",
    "hook": "claudemesh.cli.hook:hook",
    "sessions": "claudemesh.cli.sessions:sessions",
    "daemon": "claudemesh.cli.daemon:daemon",
    "broker": "claudemesh.cli.broker:broker",
    "mesh": "claudemesh.cli.mesh:mesh",
    "join": "claudemesh.cli.mesh:join",
    "up": "claudemesh.cli.quickstart:up",
    "down": "claudemesh.cli.quickstart:down",
    "completion": "claudemesh.cli.completion:completion",
    "setup": "claudemesh.cli.setup:setup",
    "mcp": "claudemesh.cli.mcp:mcp",
    "doctor": "claudemesh.cli.doctor:doctor",
    "file": "claudemesh.cli.files:file",
    "search": "claudemesh.cli.search:search",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command: Any = getattr(importlib.import_module(module), attr)
            return command  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="claudemesh")
def cli() -> None:
    """Message peers on other machines through a broker, reliably.

    Exit codes: 0 ok, 1 failure, 2 usage or config, 3 daemon unreachable,
    4 host fingerprint mismatch, 5 send conflict, 6 broker incompatible,
    7 broker untrusted (its TLS key is not the pinned one).
    """


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="claudemesh", standalone_mode=False)
    except ClaudemeshError as exc:
        PRINTER.error(exc)
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        code = ExitCode.FAILURE
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)
