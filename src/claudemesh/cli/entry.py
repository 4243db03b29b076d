"""The ``claudemesh`` executable: hooks take a short path around click.

Claude Code runs ``claudemesh hook <Event>`` on every prompt and after every tool call,
so that path imports only what a hook needs (the sync SDK client and the framing), not
click and the command tree (about 40 ms). Everything else goes to :mod:`.main`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "hook" and not argv[1].startswith("-"):
        from claudemesh.agent.hooks import main as hook  # noqa: PLC0415

        sys.exit(hook(argv[1:]))
    from claudemesh.cli.main import main as cli  # noqa: PLC0415

    cli()
