"""agent.claude_setup on real files: executable lookup, atomic writes, modes, symlinks,
and a file that changes between planning and writing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from claudemesh.agent.claude_setup import (
    Action,
    FileKind,
    Scope,
    find_executable,
    plan_file,
    run,
    targets,
)
from claudemesh.errors import AgentSettingsInvalid, AgentSettingsWriteFailed, ExecutableNotFound

EXE = "/opt/venv/bin/claudemesh"


def make_executable(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# -- find_executable ----------------------------------------------------------------------


def test_the_script_beside_the_interpreter_wins_over_path(tmp_path: Path) -> None:
    beside = make_executable(tmp_path / "venv" / "bin" / "claudemesh")
    on_path = make_executable(tmp_path / "elsewhere" / "claudemesh")
    found = find_executable(interpreter=str(tmp_path / "venv" / "bin" / "python"),
                            path_env=str(on_path.parent))
    assert found == str(beside)


def test_path_is_the_fallback_and_the_result_is_absolute(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    make_executable(tmp_path / "bin" / "claudemesh")
    make_executable(tmp_path / "venv" / "bin" / "claudemesh", mode=0o644)  # not executable
    monkeypatch.chdir(tmp_path)
    found = find_executable(interpreter=str(tmp_path / "venv" / "bin" / "python"),
                            path_env="bin")
    assert found == str(tmp_path / "bin" / "claudemesh")


def test_a_venv_symlink_is_not_resolved(tmp_path: Path) -> None:
    real = make_executable(tmp_path / "store" / "claudemesh-1.0")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "claudemesh").symlink_to(real)
    found = find_executable(interpreter=str(tmp_path / "venv" / "bin" / "python"),
                            path_env="")
    assert found == str(tmp_path / "venv" / "bin" / "claudemesh")


def test_no_executable_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ExecutableNotFound) as info:
        find_executable(interpreter=str(tmp_path / "python"), path_env=str(tmp_path))
    assert info.value.exit_code == 2
    assert "pip install" in info.value.detail
    assert "PATH" in info.value.detail


# -- targets and plans --------------------------------------------------------------------


def test_targets_are_claude_codes_documented_files(tmp_path: Path) -> None:
    project, user = (targets(s, project_dir=tmp_path / "p", home=tmp_path / "h")
                     for s in (Scope.PROJECT, Scope.USER))
    assert [(t.path, t.kind, oct(t.new_mode)) for t in project] == [
        (tmp_path / "p" / ".mcp.json", FileKind.MCP, "0o644"),
        (tmp_path / "p" / ".claude" / "settings.json", FileKind.SETTINGS, "0o644")]
    assert [(t.path, t.kind, oct(t.new_mode)) for t in user] == [
        (tmp_path / "h" / ".claude.json", FileKind.MCP, "0o600"),
        (tmp_path / "h" / ".claude" / "settings.json", FileKind.SETTINGS, "0o600")]


def test_remove_plans_nothing_for_a_missing_file_and_creates_nothing(tmp_path: Path) -> None:
    plans = run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path / "h", executable=None,
                dry_run=False)
    assert [p.action for p in plans] == [Action.UNCHANGED, Action.UNCHANGED]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content", "reason"), [
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"mcpServers": ', "not valid JSON"),
    (b'{"mcpServers": []}', "mcpServers must be an object"),
])
def test_a_refused_file_names_itself_and_the_reason(tmp_path: Path, content: bytes,
                                                    reason: str) -> None:
    path = tmp_path / ".mcp.json"
    path.write_bytes(content)
    target = targets(Scope.PROJECT, project_dir=tmp_path, home=tmp_path)[0]
    with pytest.raises(AgentSettingsInvalid) as info:
        plan_file(target, executable=EXE)
    assert reason in info.value.detail
    assert str(path) in info.value.detail
    assert info.value.fields["path"] == str(path)


def test_a_directory_where_the_file_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".mcp.json").mkdir()
    with pytest.raises(AgentSettingsInvalid, match="not a regular file"):
        run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE, dry_run=False)
    assert not (tmp_path / ".claude").exists()


def test_one_refused_file_means_neither_is_written(tmp_path: Path) -> None:
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text('{"hooks": {"Stop": {}}}')
    with pytest.raises(AgentSettingsInvalid) as info:
        run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE, dry_run=False)
    assert info.value.fields["where"] == "hooks.Stop"
    assert not (tmp_path / ".mcp.json").exists()


# -- writing ------------------------------------------------------------------------------


def test_an_existing_file_keeps_its_mode_and_no_temp_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / ".mcp.json"
    path.write_text('{\n  "mcpServers": {}\n}\n')
    path.chmod(0o640)
    run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE, dry_run=False)
    assert mode_of(path) == 0o640
    assert json.loads(path.read_text())["mcpServers"]["claudemesh"]["command"] == EXE
    assert leftovers(tmp_path) == []
    assert leftovers(tmp_path / ".claude") == []


def test_new_user_files_are_private_in_a_private_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    old_umask = os.umask(0o022)
    try:
        run(Scope.USER, project_dir=tmp_path, home=home, executable=EXE, dry_run=False)
    finally:
        os.umask(old_umask)
    assert mode_of(home / ".claude.json") == 0o600
    assert mode_of(home / ".claude") == 0o700
    assert mode_of(home / ".claude" / "settings.json") == 0o600


def test_new_project_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE, dry_run=False)
    finally:
        os.umask(old_umask)
    assert mode_of(tmp_path / ".mcp.json") == 0o644
    assert mode_of(tmp_path / ".claude" / "settings.json") == 0o644


def test_a_symlinked_settings_file_stays_a_symlink_and_its_target_is_updated(
        tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text('{\n  "model": "opus"\n}\n')
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    link = home / ".claude" / "settings.json"
    link.symlink_to(dotfiles)
    plans = run(Scope.USER, project_dir=tmp_path, home=home, executable=EXE, dry_run=False)
    assert link.is_symlink()
    assert json.loads(dotfiles.read_text())["model"] == "opus"
    assert "Stop" in json.loads(dotfiles.read_text())["hooks"]
    assert plans[1].target.path == link
    assert plans[1].real_path == dotfiles
    assert leftovers(dotfiles.parent) == []


def test_a_file_changed_between_plan_and_write_is_planned_again_from_the_new_content(
        tmp_path: Path) -> None:
    """1. plan both files; 2. another writer (Claude Code) rewrites ~/.claude.json;
    3. the write notices, drops its temp file and plans again; 4. both changes survive."""
    home = tmp_path / "home"
    home.mkdir()
    state = home / ".claude.json"
    state.write_text('{\n  "numStartups": 1\n}\n')
    calls = 0

    def claude_code_writes() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            state.write_text('{\n  "numStartups": 2\n}\n')

    plans = run(Scope.USER, project_dir=tmp_path, home=home, executable=EXE, dry_run=False,
                before_write=claude_code_writes)
    assert calls == 2
    doc = json.loads(state.read_text())
    assert doc["numStartups"] == 2
    assert doc["mcpServers"]["claudemesh"]["command"] == EXE
    assert [p.action for p in plans] == [Action.UPDATED, Action.CREATED]
    assert leftovers(home) == []


def test_a_file_that_never_stops_changing_fails_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    state = home / ".claude.json"
    state.write_text("{}")
    counter = iter(range(100))

    def keeps_writing() -> None:
        state.write_text(json.dumps({"n": next(counter)}))

    with pytest.raises(AgentSettingsWriteFailed, match="kept changing"):
        run(Scope.USER, project_dir=tmp_path, home=home, executable=EXE, dry_run=False,
            before_write=keeps_writing)
    assert "mcpServers" not in json.loads(state.read_text())
    assert leftovers(home) == []


def test_a_file_written_on_an_earlier_attempt_is_reported_as_written(tmp_path: Path) -> None:
    """The MCP file is written on attempt 1, the settings file changes under us; attempt 2
    finds the MCP file done. The report still says it was created."""
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{}")
    calls = 0

    def edit_settings_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            settings.write_text('{"model": "x"}')

    plans = run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE,
                dry_run=False, before_write=edit_settings_once)
    assert [p.action for p in plans] == [Action.CREATED, Action.UPDATED]
    assert json.loads(settings.read_text())["model"] == "x"


def test_a_read_only_directory_is_a_write_failure_and_the_file_is_untouched(
        tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    path = tmp_path / ".mcp.json"
    path.write_text("{}")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(AgentSettingsWriteFailed, match="cannot write"):
            run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE,
                dry_run=False)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_text() == "{}"


def test_a_file_where_the_settings_directory_should_be_is_refused_before_any_write(
        tmp_path: Path) -> None:
    (tmp_path / ".claude").write_text("not a directory")
    with pytest.raises(AgentSettingsInvalid, match="cannot read it"):
        run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE, dry_run=False)
    assert not (tmp_path / ".mcp.json").exists()


def test_a_file_deleted_between_plan_and_write_is_planned_again(tmp_path: Path) -> None:
    path = tmp_path / ".mcp.json"
    path.write_text('{"keep": 1}')
    calls = 0

    def delete_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            path.unlink()

    plans = run(Scope.PROJECT, project_dir=tmp_path, home=tmp_path, executable=EXE,
                dry_run=False, before_write=delete_once)
    assert plans[0].action is Action.CREATED
    assert json.loads(path.read_text()) == {"mcpServers": {"claudemesh": {
        "command": EXE, "args": ["mcp"]}}}
    assert mode_of(path) == 0o644
