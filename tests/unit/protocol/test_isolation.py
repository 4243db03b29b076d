"""The pure core stays pure, and the CLI stays light (STYLE (b)1, DESIGN §3).

``protocol/`` is checked module by module, found on disk, so a new module is covered the
day it is added: its source imports nothing that does I/O and nothing of claudemesh
outside ``protocol/`` (read with ast, lazy imports included), and importing all of it
loads no I/O stack. The layers above it are tests/unit/test_layering.py.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from typing import Final

import pytest

import claudemesh.protocol
from importkit import Import, imports_of, module_files, parse


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


PROTOCOL: Final = module_files("claudemesh.protocol")
# Sockets, processes, threads, event loops, databases, files, logs: none belongs in the
# pure core. A dotted entry forbids that module and everything under it.
NO_IO: Final = (
    "socket", "ssl", "select", "selectors", "asyncio", "threading", "multiprocessing",
    "concurrent", "subprocess", "signal", "sqlite3", "asyncpg", "aiohttp", "websockets",
    "http.client", "http.server", "urllib.request", "pathlib", "shutil", "tempfile", "glob",
    "io", "fcntl", "mmap", "logging", "structlog", "importlib", "os.path",
)
OS_ALLOWED: Final = frozenset({"urandom"})  # ids.py's random bits; no file or env access


def test_protocol_modules_are_found_on_disk_as_the_import_system_finds_them() -> None:
    listed = {m.name for m in pkgutil.iter_modules(claudemesh.protocol.__path__,
                                                   "claudemesh.protocol.")}
    assert set(PROTOCOL) - {"claudemesh.protocol"} == listed
    assert {"claudemesh.protocol.frames", "claudemesh.protocol.close"} <= listed


def test_protocol_imports_no_io_stack() -> None:
    modules = loaded_after(f"import {', '.join(PROTOCOL)}, claudemesh.daemon.store.outbox_rules")
    for heavy in ("aiohttp", "websockets", "sqlite3", "asyncpg", "asyncio"):
        assert heavy not in modules, heavy


def test_importing_all_of_protocol_loads_nothing_else_of_claudemesh() -> None:
    loaded = {m for m in loaded_after(f"import {', '.join(PROTOCOL)}")
              if m == "claudemesh" or m.startswith("claudemesh.")}
    assert loaded == {"claudemesh", *PROTOCOL}


def _forbidden(imp: Import) -> bool:
    target = imp.target
    if target == "claudemesh" or target.startswith("claudemesh."):
        return not (target == "claudemesh.protocol" or target.startswith("claudemesh.protocol."))
    return any(target == bad or target.startswith(f"{bad}.") for bad in NO_IO)


def _os_and_open_uses(tree: ast.Module) -> list[str]:
    """``os.<name>`` beyond OS_ALLOWED, ``from os import`` of such a name, and calls of the
    builtins that open files or import by name."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "os" and node.attr not in OS_ALLOWED):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"line {node.lineno}: from os import {a.name}" for a in node.names
                      if a.name not in OS_ALLOWED]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("open", "__import__", "exec", "eval")):
            found.append(f"line {node.lineno}: {node.func.id}()")
    return found


@pytest.mark.parametrize("module", sorted(PROTOCOL))
def test_a_protocol_module_imports_no_io_and_nothing_outside_protocol(module: str) -> None:
    path = PROTOCOL[module]
    bad = [str(imp) for imp in imports_of(module, path) if _forbidden(imp)]
    assert bad == [], "protocol/ must stay pure (STYLE (b)1)"
    assert _os_and_open_uses(parse(path)) == [], f"{path.name} does I/O"


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
