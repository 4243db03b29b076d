"""The pure core stays pure, and the CLI stays light (STYLE (b)1, DESIGN §3)."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_protocol_imports_no_io_stack() -> None:
    modules = loaded_after(
        "import claudemesh.protocol.fingerprint, claudemesh.protocol.destination,"
        " claudemesh.protocol.ids, claudemesh.protocol.envelope, claudemesh.protocol.sealed,"
        " claudemesh.daemon.store.outbox_rules")
    for heavy in ("aiohttp", "websockets", "sqlite3", "asyncpg", "asyncio"):
        assert heavy not in modules, heavy


def test_cli_entry_point_does_not_import_the_server_stack() -> None:
    modules = loaded_after("import claudemesh.cli.main")
    for heavy in ("aiohttp", "websockets", "sqlite3", "pydantic", "asyncpg", "structlog",
                  "asyncio", "http.client", "email", "mcp", "mcp_types", "anyio"):
        assert heavy not in modules, heavy


def test_agent_framing_and_naming_stay_light_for_the_hooks() -> None:
    modules = loaded_after("import claudemesh.agent.framing, claudemesh.agent.naming")
    for heavy in ("asyncio", "pydantic", "mcp", "mcp_types", "anyio", "claudemesh.sdk",
                  "sqlite3", "aiohttp"):
        assert heavy not in modules, heavy


def test_the_mcp_command_loads_the_sdk_only_when_run() -> None:
    modules = loaded_after("import claudemesh.cli.mcp")
    assert "mcp" not in modules and "claudemesh.agent.mcp_server" not in modules


def test_the_hook_path_skips_click_and_the_server_stack() -> None:
    """Claude Code runs `claudemesh hook` on every prompt and tool call."""
    modules = loaded_after("import claudemesh.cli.entry, claudemesh.agent.hooks")
    for heavy in ("click", "asyncio", "pydantic", "aiohttp", "websockets", "sqlite3", "mcp",
                  "anyio", "nacl", "http.client", "email", "claudemesh.cli.main"):
        assert heavy not in modules, heavy
