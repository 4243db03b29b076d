"""``claudemesh`` entry point: the one place where errors become exit codes (DESIGN §4)."""

from __future__ import annotations

import sys

import click

from claudemesh import __version__
from claudemesh.cli.broker import broker
from claudemesh.cli.daemon import daemon
from claudemesh.cli.mesh import join, mesh
from claudemesh.cli.messages import events, inbox, peers, profile
from claudemesh.cli.output import PRINTER
from claudemesh.cli.quickstart import down, up
from claudemesh.cli.send import send
from claudemesh.errors import ClaudemeshError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="claudemesh")
def cli() -> None:
    """Message peers on other machines through a broker, reliably.

    Exit codes: 0 ok, 1 failure, 2 usage or config, 3 daemon unreachable,
    4 host fingerprint mismatch, 5 send conflict, 6 broker incompatible.
    """


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print the shell completion script, e.g. `eval "$(claudemesh completion bash)"`."""
    from click.shell_completion import get_completion_class  # noqa: PLC0415

    cls = get_completion_class(shell)
    assert cls is not None
    sys.stdout.write(cls(cli, {}, "claudemesh", "_CLAUDEMESH_COMPLETE").source() + "\n")
    return 0


cli.add_command(daemon)
cli.add_command(broker)
cli.add_command(mesh)
cli.add_command(join)
for command in (send, inbox, peers, profile, events, up, down):
    cli.add_command(command)


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
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
