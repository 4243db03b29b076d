"""The text and JSON reports of ``claudemesh setup claude-code`` (pure formatters)."""

from __future__ import annotations

from pathlib import Path

from claudemesh.agent.claude_settings import Change, ChangeKind
from claudemesh.agent.claude_setup import Action, FileKind, FilePlan, Target
from claudemesh.cli.setup import format_plans, plans_to_json

MCP = Target(Path("/p/.mcp.json"), FileKind.MCP, 0o644)
SETTINGS = Target(Path("/p/.claude/settings.json"), FileKind.SETTINGS, 0o644)


def plan(target: Target, action: Action, changes: tuple[Change, ...] = (),
         old: bytes | None = None, new: bytes | None = None) -> FilePlan:
    return FilePlan(target, target.path, old, new, changes, action)


CREATED = plan(MCP, Action.CREATED, (Change(ChangeKind.ADDED, "mcpServers.claudemesh"),),
               None, b'{\n  "mcpServers": {}\n}\n')
OLD_HOOK = "/old/claudemesh hook PostToolUse"
UPDATED = plan(SETTINGS, Action.UPDATED,
               (Change(ChangeKind.ADDED, "hooks.Stop"),
                Change(ChangeKind.ADDED, "hooks.SessionEnd"),
                Change(ChangeKind.REPLACED, "hooks.PostToolUse", OLD_HOOK)),
               b"{}\n", b'{\n  "hooks": {}\n}\n')


def test_text_report_has_one_line_per_file_and_the_notes() -> None:
    text = format_plans([CREATED, UPDATED], dry_run=False, notes=["approve it"])
    assert text.splitlines() == [
        "created /p/.mcp.json: added mcpServers.claudemesh",
        "updated /p/.claude/settings.json: added hooks.Stop, hooks.SessionEnd; replaced "
        "hooks.PostToolUse (was: /old/claudemesh hook PostToolUse)",
        "note: approve it"]


def test_dry_run_text_shows_new_content_and_diffs() -> None:
    text = format_plans([CREATED, UPDATED, plan(SETTINGS, Action.UNCHANGED)], dry_run=True,
                        notes=[])
    assert text.startswith('would create /p/.mcp.json: added mcpServers.claudemesh\n{\n  "mcpS')
    assert "would update /p/.claude/settings.json:" in text
    assert "--- /p/.claude/settings.json (now)\n+++ /p/.claude/settings.json (after)\n" in text
    assert "\nunchanged /p/.claude/settings.json\n" in text
    assert text.endswith("dry run: nothing was written")


def test_removal_names_only_where() -> None:
    removed = plan(SETTINGS, Action.REMOVED, (Change(ChangeKind.REMOVED, "hooks.Stop"),
                                              Change(ChangeKind.REMOVED, "hooks.SessionEnd")),
                   b"{}", b"{}")
    assert format_plans([removed], dry_run=False, notes=[]) == \
        "removed from /p/.claude/settings.json: hooks.Stop, hooks.SessionEnd"


def test_json_report() -> None:
    data = plans_to_json([CREATED, UPDATED], scope="project", executable="/v/claudemesh",
                         dry_run=True, remove=False, notes=["n"])
    assert data["scope"] == "project" and data["executable"] == "/v/claudemesh"
    assert data["dry_run"] is True and data["remove"] is False and data["notes"] == ["n"]
    created, updated = data["files"]
    assert created == {"path": "/p/.mcp.json", "action": "created",
                       "changes": [{"change": "added", "where": "mcpServers.claudemesh",
                                    "previous": None}],
                       "content": '{\n  "mcpServers": {}\n}\n'}
    assert updated["changes"][2] == {"change": "replaced", "where": "hooks.PostToolUse",
                                     "previous": "/old/claudemesh hook PostToolUse"}
    assert updated["diff"].startswith("--- /p/.claude/settings.json (now)")
    written = plans_to_json([CREATED], scope="project", executable=None, dry_run=False,
                            remove=False, notes=[])
    assert "content" not in written["files"][0] and "diff" not in written["files"][0]
