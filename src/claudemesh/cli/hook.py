"""``claudemesh hook <Event>`` in the command tree, for ``--help`` and completion.

Claude Code's own calls take the short path in :mod:`claudemesh.cli.entry`; both end in
:func:`claudemesh.agent.hooks.main`.
"""

from __future__ import annotations

import click

from claudemesh.agent.hooks import EVENTS, main

__all__ = ["hook"]


@click.command()
@click.argument("event", type=click.Choice(EVENTS))
def hook(event: str) -> int:
    """Answer a Claude Code hook: EVENT's JSON on stdin, Claude Code's answer on stdout.

    Installed by `claudemesh setup claude-code`. Prints nothing and exits 0 when the
    daemon is down, within a second.
    """
    return main([event])
