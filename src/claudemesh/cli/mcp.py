"""``claudemesh mcp``: the stdio MCP server for one agent session (docs/agents.md).

The ``mcp`` SDK and the server stack are imported inside the command, so only this
command pays for them (about 0.8 s); ``claudemesh send`` never does.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from claudemesh.agent import naming

__all__ = ["mcp"]


@click.command()
@click.option("--session", "session_name",
              help=f"Session name (default: ${naming.ENV_SESSION}, else the current"
                   " directory's name). Taken names get -2 ... -9.")
@click.option("--default", "is_default", is_flag=True,
              help="Make this the default session: bare DMs to your member land here.")
@click.option("--channel", is_flag=True,
              help="Push new messages as claude/channel notifications even if the client"
                   " did not declare the capability (Claude Code with channels enabled).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def mcp(*, session_name: str | None, is_default: bool, channel: bool, verbose: bool) -> int:
    """Serve MCP over stdio for one agent session (stdout is the JSON-RPC channel).

    Register with Claude Code: claude mcp add claudemesh -- claudemesh mcp
    """
    cwd = str(Path.cwd())
    name = naming.session_name(session_name, os.environ, cwd)
    # The server stack loads here, and only here (see the module docstring).
    from claudemesh.agent.mcp_server import ServerOptions, main  # noqa: PLC0415
    from claudemesh.agent.session import Registration  # noqa: PLC0415

    # pid: our parent, the MCP client; the session lives as long as it does.
    return main(ServerOptions(
        Registration(name=name, harness=naming.harness(os.environ), pid=os.getppid(),
                     cwd=cwd, default=is_default),
        force_channel=channel), verbose=verbose)
