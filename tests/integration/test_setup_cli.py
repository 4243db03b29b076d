"""``claudemesh setup`` as a user runs it: the real CLI in a subprocess, HOME pointed at a
temp dir, and Claude Code's files written the way Claude Code and people write them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXE = str(Path(sys.executable).parent / "claudemesh")  # what setup must find: our venv's
EVENTS = ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop", "SessionEnd"]

# ~/.claude.json as Claude Code keeps it (JSON.stringify(state, null, 2), no final newline)
CLAUDE_STATE: dict[str, Any] = {
    "numStartups": 212,
    "installMethod": "native",
    "autoUpdates": True,
    "tipsHistory": {"new-user-warmup": 7, "shift-enter": 29, "memory-command": 12},
    "firstStartTime": "2026-01-09T08:12:44.501Z",
    "userID": "4f0c6d3b9a2e7f1c8d5b0a3e6f9c2d1b4a7e0f3c6b9d2a5e8f1c4b7a0d3e6f9c",
    "projects": {
        "/home/ana/work/api": {
            "allowedTools": [], "history": [
                {"display": "run the tests", "pastedContents": {}},
                {"display": "fix the flaky \"retry\" test — ünïcode", "pastedContents": {}}],
            "mcpContextUris": [], "mcpServers": {},
            "enabledMcpjsonServers": ["postgres"], "disabledMcpjsonServers": [],
            "hasTrustDialogAccepted": True, "projectOnboardingSeenCount": 2,
            "lastCost": 0.4821, "lastDuration": 912345, "lastSessionId": "7d1e-42"},
        "/home/ana/work/web": {
            "allowedTools": ["Bash(npm test:*)"], "history": [], "mcpServers": {
                "local-only": {"type": "stdio", "command": "node", "args": ["srv.js"],
                               "env": {}}},
            "hasTrustDialogAccepted": False, "exampleFiles": ["app.tsx", "api.ts"]},
        "/tmp": {"allowedTools": [], "history": [], "hasTrustDialogAccepted": False},
    },
    "mcpServers": {
        "github": {"type": "http", "url": "https://api.githubcopilot.com/mcp/",
                   "headers": {"Authorization": "Bearer ${GITHUB_PAT}"}},
        "playwright": {"type": "stdio", "command": "npx", "args": ["@playwright/mcp@latest"],
                       "env": {}},
    },
    "oauthAccount": {"accountUuid": "0b7e-11", "emailAddress": "ana@example.org",
                     "organizationRole": "admin"},
    "hasCompletedOnboarding": True,
    "lastOnboardingVersion": "2.1.90",
    "cachedChangelog": "# Changelog\n\n## 2.1.90\n- Faster startup\n",
}

# ~/.claude/settings.json as a person keeps it (with a final newline)
USER_SETTINGS: dict[str, Any] = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "model": "opus",
    "permissions": {"allow": ["Bash(git diff:*)", "Bash(npm run lint)", "Read(~/.zshrc)"],
                    "deny": ["Read(./.env)", "Bash(curl:*)"], "defaultMode": "acceptEdits"},
    "env": {"BASH_DEFAULT_TIMEOUT_MS": "120000"},
    "hooks": {
        "PostToolUse": [{"matcher": "Edit|MultiEdit|Write", "hooks": [
            {"type": "command",
             "command": "jq -r '.tool_input.file_path' | xargs npx prettier --write",
             "timeout": 30}]}],
        "Notification": [{"hooks": [{"type": "command",
                                     "command": "notify-send 'Claude Code' 'needs you'"}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "paplay /usr/share/sounds/done.oga"}]}],
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh", "padding": 0},
    "includeCoAuthoredBy": False,
}

PROJECT_MCP: dict[str, Any] = {"mcpServers": {"postgres": {
    "command": "npx", "args": ["-y", "@modelcontextprotocol/server-postgres"],
    "env": {"DATABASE_URL": "${DATABASE_URL:-postgresql://localhost/dev}"}}}}

PROJECT_SETTINGS: dict[str, Any] = {
    "permissions": {"allow": ["Bash(make test)"]},
    "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [
        {"type": "command", "command": "\"$CLAUDE_PROJECT_DIR\"/.claude/hooks/guard.py"}]}],
              "SessionStart": [{"matcher": "startup", "hooks": [
                  {"type": "command", "command": "cat docs/onboarding.md"}]}]},
}


def js_style(doc: dict[str, Any], *, final_newline: bool) -> bytes:
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return (text + "\n" if final_newline else text).encode()


class World:
    """A HOME and a project directory, and the CLI run against them."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.project = root / "project"
        self.home.mkdir()
        self.project.mkdir()
        # PATH without our venv: setup then writes the executable's absolute path
        self.env = {**os.environ, "HOME": str(self.home), "PATH": "/usr/bin:/bin",
                    "CLAUDEMESH_CONFIG_DIR": str(root / "cm")}

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "claudemesh", "setup", *args],
                              env=self.env, cwd=cwd or self.project, capture_output=True,
                              text=True, timeout=60, check=False)

    def ok(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, cwd=cwd)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result

    def report(self, *args: str) -> dict[str, Any]:
        result = self.ok(*args, "--json")
        (line,) = result.stdout.splitlines()
        data: dict[str, Any] = json.loads(line)
        return data

    @property
    def user_files(self) -> list[Path]:
        return [self.home / ".claude.json", self.home / ".claude" / "settings.json"]

    @property
    def project_files(self) -> list[Path]:
        return [self.project / ".mcp.json", self.project / ".claude" / "settings.json"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in paths}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def our_commands(settings: dict[str, Any], event: str) -> list[str]:
    return [h["command"] for g in settings["hooks"][event] for h in g["hooks"]
            if "claudemesh" in h.get("command", "")]


def test_fresh_project_setup_in_the_current_directory_then_a_rerun_changes_no_byte(
        world: World) -> None:
    first = world.ok("claude-code")  # no flag: the current directory is the project
    mcp, settings = world.project_files
    assert json.loads(mcp.read_text()) == {
        "mcpServers": {"claudemesh": {"command": EXE, "args": ["mcp"]}}}
    hooks = json.loads(settings.read_text())["hooks"]
    assert list(hooks) == EVENTS
    assert hooks["PostToolUse"] == [{"matcher": "*", "hooks": [
        {"type": "command", "command": f"{EXE} hook PostToolUse", "timeout": 5}]}]
    assert hooks["Stop"] == [{"hooks": [
        {"type": "command", "command": f"{EXE} hook Stop", "timeout": 5}]}]
    assert mcp.read_text().endswith("}\n") and '\n  "mcpServers": {\n' in mcp.read_text()
    assert mode_of(mcp) == 0o644 and mode_of(settings) == 0o644
    assert f"created {mcp}: added mcpServers.claudemesh" in first.stdout
    assert "enabledMcpjsonServers" in first.stdout
    assert "--dangerously-load-development-channels server:claudemesh" in first.stdout
    assert list(world.home.iterdir()) == []

    before = snapshot(world.project_files)
    mtimes = [p.stat().st_mtime_ns for p in world.project_files]
    again = world.report("claude-code", "--project", str(world.project))
    assert snapshot(world.project_files) == before
    assert [p.stat().st_mtime_ns for p in world.project_files] == mtimes
    assert [(f["path"], f["action"]) for f in again["files"]] == [
        (str(p), "unchanged") for p in world.project_files]


def test_fresh_user_setup_writes_private_files(world: World) -> None:
    data = world.report("claude-code", "--user")
    state, settings = world.user_files
    assert data["scope"] == "user" and data["executable"] == EXE
    assert [f["action"] for f in data["files"]] == ["created", "created"]
    assert mode_of(state) == 0o600 and mode_of(settings) == 0o600
    assert mode_of(world.home / ".claude") == 0o700
    assert json.loads(state.read_text())["mcpServers"]["claudemesh"]["args"] == ["mcp"]
    assert not (world.project / ".mcp.json").exists()
    assert not any("enabledMcpjsonServers" in n for n in data["notes"])


def test_user_setup_over_claude_codes_own_files_keeps_everything_and_remove_restores_them(
        world: World) -> None:
    state, settings = world.user_files
    state.write_bytes(js_style(CLAUDE_STATE, final_newline=False))
    state.chmod(0o600)
    settings.parent.mkdir()
    settings.write_bytes(js_style(USER_SETTINGS, final_newline=True))
    settings.chmod(0o640)
    original = snapshot(world.user_files)

    data = world.report("claude-code", "--user")
    assert [f["action"] for f in data["files"]] == ["updated", "updated"]
    new_state = json.loads(state.read_text())
    assert list(new_state) == list(CLAUDE_STATE)
    assert {k: v for k, v in new_state.items() if k != "mcpServers"} == \
        {k: v for k, v in CLAUDE_STATE.items() if k != "mcpServers"}
    assert list(new_state["mcpServers"]) == ["github", "playwright", "claudemesh"]
    assert new_state["mcpServers"]["github"] == CLAUDE_STATE["mcpServers"]["github"]
    assert not state.read_text().endswith("\n")  # its layout kept
    new_settings = json.loads(settings.read_text())
    assert list(new_settings) == list(USER_SETTINGS)
    assert new_settings["permissions"] == USER_SETTINGS["permissions"]
    assert list(new_settings["hooks"]) == ["PostToolUse", "Notification", "Stop",
                                           "SessionStart", "UserPromptSubmit", "SessionEnd"]
    assert new_settings["hooks"]["PostToolUse"][0] == USER_SETTINGS["hooks"]["PostToolUse"][0]
    assert new_settings["hooks"]["Stop"][0] == USER_SETTINGS["hooks"]["Stop"][0]
    assert our_commands(new_settings, "Stop") == [f"{EXE} hook Stop"]
    assert mode_of(settings) == 0o640 and mode_of(state) == 0o600

    assert world.report("claude-code", "--user")["files"][0]["action"] == "unchanged"
    removed = world.report("claude-code", "--user", "--remove")
    assert [f["action"] for f in removed["files"]] == ["removed", "removed"]
    assert snapshot(world.user_files) == original
    assert mode_of(settings) == 0o640


def test_project_setup_over_existing_files_and_remove_restores_their_bytes(
        world: World) -> None:
    mcp, settings = world.project_files
    mcp.write_bytes(js_style(PROJECT_MCP, final_newline=True))
    settings.parent.mkdir()
    settings.write_bytes(js_style(PROJECT_SETTINGS, final_newline=True))
    original = snapshot(world.project_files)

    world.ok("claude-code", "--project", str(world.project))
    doc = json.loads(settings.read_text())
    assert doc["hooks"]["SessionStart"] == [  # theirs (matcher startup) first, ours after
        *PROJECT_SETTINGS["hooks"]["SessionStart"],
        {"hooks": [{"type": "command", "command": f"{EXE} hook SessionStart", "timeout": 5}]}]
    assert doc["hooks"]["PreToolUse"] == PROJECT_SETTINGS["hooks"]["PreToolUse"]
    assert list(json.loads(mcp.read_text())["mcpServers"]) == ["postgres", "claudemesh"]

    text = world.ok("claude-code", "--remove").stdout
    assert f"removed from {mcp}: mcpServers.claudemesh" in text
    assert snapshot(world.project_files) == original


def test_remove_after_a_fresh_setup_leaves_empty_objects_not_missing_files(
        world: World) -> None:
    world.ok("claude-code")
    world.ok("claude-code", "--remove")
    assert [p.read_text() for p in world.project_files] == ["{}\n", "{}\n"]
    nothing = world.report("claude-code", "--remove")
    assert [f["action"] for f in nothing["files"]] == ["unchanged", "unchanged"]


def test_remove_where_there_is_nothing_creates_nothing(world: World) -> None:
    world.ok("claude-code", "--remove", "--user")
    world.ok("claude-code", "--remove")
    assert list(world.home.iterdir()) == [] and list(world.project.iterdir()) == []


def test_dry_run_writes_nothing_and_shows_what_it_would(world: World) -> None:
    result = world.ok("claude-code", "--dry-run")
    assert list(world.project.iterdir()) == []  # not even .claude/
    assert f"would create {world.project / '.mcp.json'}" in result.stdout
    assert f'"command": "{EXE}"' in result.stdout
    assert "dry run: nothing was written" in result.stdout

    state = world.user_files[0]
    state.write_bytes(js_style(CLAUDE_STATE, final_newline=False))
    before = snapshot(world.user_files)
    data = world.report("claude-code", "--user", "--dry-run")
    assert snapshot(world.user_files) == before
    assert not (world.home / ".claude").exists()
    state_item, settings_item = data["files"]
    assert data["dry_run"] is True
    assert state_item["action"] == "updated"
    assert f'+    "claudemesh": {{\n+      "command": "{EXE}",' in state_item["diff"]
    assert settings_item["action"] == "created"
    assert json.loads(settings_item["content"])["hooks"]["Stop"]

    world.ok("claude-code", "--user")
    before = snapshot(world.user_files)
    removal = world.report("claude-code", "--user", "--remove", "--dry-run")
    assert snapshot(world.user_files) == before
    assert '-    "claudemesh": {' in removal["files"][0]["diff"]


@pytest.mark.parametrize(("name", "content", "where"), [
    (".mcp.json", b'{\n  "mcpServers": {\n    "postgres": {}\n  \n', ""),
    (".mcp.json", b'{"mcpServers": ["claudemesh"]}', "mcpServers"),
    (".mcp.json", b'{"a": 1, "a": 2}', ""),
    (".claude/settings.json", b'{"hooks": {"Stop": [{"command": "x"}]}}',
     "hooks.Stop[0].hooks"),
    (".claude/settings.json", b"// comments are not JSON\n{}", ""),
])
def test_a_file_that_is_not_valid_json_of_the_right_shape_is_refused_and_untouched(
        world: World, name: str, content: bytes, where: str) -> None:
    path = world.project / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    before = snapshot(world.project_files)
    for args in (("claude-code",), ("claude-code", "--remove"), ("claude-code", "--dry-run")):
        result = world.run(*args)
        assert result.returncode == 2, result
        assert str(path) in result.stderr and "nothing was written" in result.stderr
        assert "[agent_settings_invalid]" in result.stderr
        assert snapshot(world.project_files) == before
    result = world.run("claude-code", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert error["error"] == "agent_settings_invalid"
    assert error["path"] == str(path) and error["where"] == where
    assert snapshot(world.project_files) == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_an_entry_with_an_old_path_is_replaced_and_reported(world: World) -> None:
    old = "/home/ana/.old-venv/bin/claudemesh"
    mcp, settings = world.project_files
    mcp.write_bytes(js_style({"mcpServers": {"claudemesh": {"command": old, "args": ["mcp"]},
                                             "other": {"command": "x"}}}, final_newline=True))
    settings.parent.mkdir()
    settings.write_bytes(js_style({"hooks": {"Stop": [{"hooks": [
        {"type": "command", "command": "say hi"},
        {"type": "command", "command": f"{old} hook Stop", "timeout": 5}]}]}},
        final_newline=True))
    result = world.ok("claude-code")
    assert f"replaced mcpServers.claudemesh (was: {old} mcp)" in result.stdout
    assert f"replaced hooks.Stop (was: {old} hook Stop)" in result.stdout
    servers = json.loads(mcp.read_text())["mcpServers"]
    assert list(servers) == ["claudemesh", "other"]
    assert servers["claudemesh"]["command"] == EXE
    stop = json.loads(settings.read_text())["hooks"]["Stop"]
    assert [h["command"] for h in stop[0]["hooks"]] == ["say hi", f"{EXE} hook Stop"]


def test_project_and_user_together_is_a_usage_error(world: World) -> None:
    result = world.run("claude-code", "--user", "--project", str(world.project))
    assert result.returncode == 2
    assert "exclude each other" in result.stderr
    assert list(world.project.iterdir()) == [] and list(world.home.iterdir()) == []


def test_a_missing_project_directory_is_a_usage_error(world: World) -> None:
    result = world.run("claude-code", "--project", str(world.project / "nope"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_setup_mcp_print_gives_the_entry_for_any_mcp_client(world: World) -> None:
    result = world.ok("mcp", "--print")
    assert json.loads(result.stdout) == {
        "mcpServers": {"claudemesh": {"command": EXE, "args": ["mcp"]}}}
    assert len(result.stderr.strip().splitlines()) == 1
    assert "mcpServers" in result.stderr
    compact = world.ok("mcp", "--print", "--json").stdout
    assert compact.count("\n") == 1 and json.loads(compact) == json.loads(result.stdout)
    assert list(world.project.iterdir()) == [] and list(world.home.iterdir()) == []
    assert world.run("mcp").returncode == 2


def test_a_project_gets_the_plain_name_when_path_finds_this_claudemesh(world: World) -> None:
    """Project files are shared: a machine's venv path would break on a teammate's."""
    world.env["PATH"] = f"{Path(EXE).parent}:/usr/bin:/bin"
    report = world.report("claude-code")
    mcp, settings = world.project_files
    assert json.loads(mcp.read_text())["mcpServers"]["claudemesh"]["command"] == "claudemesh"
    assert our_commands(json.loads(settings.read_text()), "Stop") == ["claudemesh hook Stop"]
    assert not any("this machine's path" in n for n in report["notes"])
    # the user scope keeps the absolute path: those files never leave this machine
    assert world.report("claude-code", "--user")["executable"] == EXE
    # and --remove recognises the plain name as ours
    world.ok("claude-code", "--remove")
    assert json.loads(mcp.read_text()) == {}
    world.env["PATH"] = "/usr/bin:/bin"
    absolute = world.report("claude-code")
    assert any("this machine's path" in n for n in absolute["notes"])
