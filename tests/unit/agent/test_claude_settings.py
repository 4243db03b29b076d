"""Merging our MCP server and hooks into Claude Code's documents, and taking them out."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from claudemesh.agent.claude_settings import (
    HOOK_EVENTS,
    ChangeKind,
    hook_command,
    hook_groups,
    is_our_hook,
    mcp_entry,
    merge_hooks,
    merge_mcp,
    remove_hooks,
    remove_mcp,
)
from claudemesh.errors import AgentSettingsInvalid

EXE = "/home/u/.venv/bin/claudemesh"
OLD = "/opt/old-venv/bin/claudemesh"
EVENTS = [e.name for e in HOOK_EVENTS]


def ours(event: str, exe: str = EXE, timeout: int = 5) -> dict[str, Any]:
    return {"type": "command", "command": hook_command(exe, event), "timeout": timeout}


def their(command: str) -> dict[str, Any]:
    return {"type": "command", "command": command}


def count_ours(doc: dict[str, Any], event: str) -> int:
    return sum(1 for g in doc.get("hooks", {}).get(event, []) for h in g["hooks"]
               if is_our_hook(h, event))


# -- what we write -----------------------------------------------------------------------


def test_hook_groups_follow_claude_codes_settings_format() -> None:
    groups = hook_groups(EXE)
    assert list(groups) == ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop",
                            "SessionEnd"]
    assert groups["PostToolUse"] == {"matcher": "*", "hooks": [ours("PostToolUse")]}
    for event in ("SessionStart", "UserPromptSubmit", "Stop", "SessionEnd"):
        assert groups[event] == {"hooks": [
            {"type": "command", "command": f"{EXE} hook {event}", "timeout": 5}]}


def test_a_path_with_a_space_is_quoted_for_the_shell() -> None:
    command = hook_command("/Users/a b/venv/bin/claudemesh", "Stop")
    assert shlex.split(command) == ["/Users/a b/venv/bin/claudemesh", "hook", "Stop"]
    assert is_our_hook(their(command), "Stop")


def test_mcp_entry_runs_the_executable_with_mcp() -> None:
    assert mcp_entry(EXE) == {"command": EXE, "args": ["mcp"]}


@pytest.mark.parametrize(("hook", "event", "expected"), [
    (their(f"{EXE} hook Stop"), "Stop", True),
    (their(f"{OLD} hook Stop"), "Stop", True),
    (their("claudemesh hook Stop"), "Stop", True),
    (their("'/a b/claudemesh' hook Stop"), "Stop", True),
    ({"type": "command", "command": f"{EXE} hook Stop", "timeout": 30}, "Stop", True),
    (their(f"{EXE} hook Stop"), "SessionEnd", False),  # ours only under its own event
    (their(f"{EXE} hook Stop --verbose"), "Stop", False),
    (their(f"FOO=1 {EXE} hook Stop"), "Stop", False),
    (their("/bin/claudemesh-dev hook Stop"), "Stop", False),
    (their(f"{EXE} mcp"), "Stop", False),
    (their("echo 'unbalanced"), "Stop", False),
    ({"type": "prompt", "command": f"{EXE} hook Stop"}, "Stop", False),
    ({"type": "command", "command": ["claudemesh", "hook", "Stop"]}, "Stop", False),
    ("claudemesh hook Stop", "Stop", False),
])
def test_is_our_hook(hook: Any, event: str, expected: bool) -> None:
    assert is_our_hook(hook, event) is expected


# -- mcpServers --------------------------------------------------------------------------


def test_merge_mcp_into_an_empty_document() -> None:
    outcome = merge_mcp({}, mcp_entry(EXE))
    assert outcome.document == {"mcpServers": {"claudemesh": mcp_entry(EXE)}}
    assert [(c.kind, c.where) for c in outcome.changes] == [
        (ChangeKind.ADDED, "mcpServers.claudemesh")]


def test_merge_mcp_keeps_other_servers_and_keys_in_order() -> None:
    doc = {"numStartups": 4, "mcpServers": {"github": {"type": "http", "url": "https://x"},
                                            "fs": {"command": "npx", "args": ["fs"]}},
           "projects": {"/p": {"mcpServers": {}}}}
    before = copy.deepcopy(doc)
    outcome = merge_mcp(doc, mcp_entry(EXE))
    assert doc == before  # not mutated
    assert list(outcome.document) == ["numStartups", "mcpServers", "projects"]
    assert list(outcome.document["mcpServers"]) == ["github", "fs", "claudemesh"]
    assert outcome.document["projects"] is doc["projects"]


def test_merge_mcp_twice_changes_nothing_and_returns_the_same_document() -> None:
    first = merge_mcp({"a": 1}, mcp_entry(EXE)).document
    second = merge_mcp(first, mcp_entry(EXE))
    assert not second.changed
    assert second.document is first


def test_an_entry_spelled_like_claude_mcp_add_counts_as_the_same() -> None:
    doc = {"mcpServers": {"claudemesh": {"type": "stdio", "command": EXE, "args": ["mcp"],
                                         "env": {}}}}
    assert not merge_mcp(doc, mcp_entry(EXE)).changed


def test_merge_mcp_replaces_an_old_path_in_place_and_says_so() -> None:
    doc = {"mcpServers": {"a": {}, "claudemesh": mcp_entry(OLD), "z": {}}}
    outcome = merge_mcp(doc, mcp_entry(EXE))
    assert list(outcome.document["mcpServers"]) == ["a", "claudemesh", "z"]
    assert outcome.document["mcpServers"]["claudemesh"] == mcp_entry(EXE)
    (change,) = outcome.changes
    assert change.kind is ChangeKind.REPLACED
    assert change.previous == f"{OLD} mcp"


def test_merge_mcp_replaces_an_entry_of_another_shape() -> None:
    outcome = merge_mcp({"mcpServers": {"claudemesh": "junk"}}, mcp_entry(EXE))
    assert outcome.document["mcpServers"]["claudemesh"] == mcp_entry(EXE)
    assert outcome.changes[0].previous == "an entry of another shape"


@pytest.mark.parametrize("servers", [[], None, "x", 3, True])
def test_merge_and_remove_refuse_mcp_servers_that_is_not_an_object(servers: Any) -> None:
    for operation in (lambda d: merge_mcp(d, mcp_entry(EXE)), remove_mcp):
        with pytest.raises(AgentSettingsInvalid) as info:
            operation({"mcpServers": servers})
        assert info.value.fields["where"] == "mcpServers"
        assert "must be an object" in info.value.detail


def test_remove_mcp_drops_mcp_servers_only_when_it_emptied_it() -> None:
    assert remove_mcp({"a": 1, "mcpServers": {"claudemesh": {}}}).document == {"a": 1}
    kept = remove_mcp({"mcpServers": {"x": {}, "claudemesh": {}}}).document
    assert kept == {"mcpServers": {"x": {}}}
    empty = {"mcpServers": {}}
    assert remove_mcp(empty).document is empty


# -- hooks --------------------------------------------------------------------------------


def test_merge_hooks_into_an_empty_document() -> None:
    outcome = merge_hooks({}, hook_groups(EXE))
    assert outcome.document == {"hooks": {e: [g] for e, g in hook_groups(EXE).items()}}
    assert [c.where for c in outcome.changes] == [f"hooks.{e}" for e in EVENTS]
    assert {c.kind for c in outcome.changes} == {ChangeKind.ADDED}


def test_merge_hooks_appends_after_other_hooks_and_keeps_unrelated_keys() -> None:
    doc = {"permissions": {"allow": ["Bash(ls:*)"]},
           "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [their("guard.sh")]}],
                     "PostToolUse": [{"matcher": "Edit|Write", "hooks": [their("fmt.sh")]}],
                     "Stop": [{"hooks": [their("notify-send done")]}]},
           "model": "opus"}
    before = copy.deepcopy(doc)
    new = merge_hooks(doc, hook_groups(EXE)).document
    assert doc == before
    assert list(new) == ["permissions", "hooks", "model"]
    assert list(new["hooks"]) == ["PreToolUse", "PostToolUse", "Stop", "SessionStart",
                                  "UserPromptSubmit", "SessionEnd"]
    assert new["hooks"]["PreToolUse"] is doc["hooks"]["PreToolUse"]
    assert new["hooks"]["PostToolUse"] == [
        {"matcher": "Edit|Write", "hooks": [their("fmt.sh")]},
        {"matcher": "*", "hooks": [ours("PostToolUse")]}]
    assert new["hooks"]["Stop"] == [{"hooks": [their("notify-send done")]},
                                    {"hooks": [ours("Stop")]}]


def test_merge_hooks_twice_changes_nothing() -> None:
    first = merge_hooks({"x": []}, hook_groups(EXE)).document
    second = merge_hooks(first, hook_groups(EXE))
    assert not second.changed
    assert second.document is first


def test_equal_hook_with_keys_in_another_order_is_left_alone() -> None:
    doc = {"hooks": {e: [dict(reversed(list(g.items())))]
                     for e, g in hook_groups(EXE).items()}}
    for group in doc["hooks"].values():
        group[0]["hooks"] = [dict(reversed(list(group[0]["hooks"][0].items())))]
    assert not merge_hooks(doc, hook_groups(EXE)).changed


def test_an_old_path_is_replaced_in_place_keeping_the_groups_other_hooks() -> None:
    doc = {"hooks": {"Stop": [{"hooks": [their("a"), ours("Stop", OLD), their("b")]}]}}
    outcome = merge_hooks(doc, {"Stop": hook_groups(EXE)["Stop"]})
    assert outcome.document["hooks"]["Stop"] == [
        {"hooks": [their("a"), ours("Stop"), their("b")]}]
    (change,) = outcome.changes
    assert change.kind is ChangeKind.REPLACED
    assert change.previous == f"{OLD} hook Stop"


def test_a_changed_timeout_is_replaced() -> None:
    doc = {"hooks": {"Stop": [{"hooks": [ours("Stop", timeout=60)]}]}}
    outcome = merge_hooks(doc, {"Stop": hook_groups(EXE)["Stop"]})
    assert outcome.document["hooks"]["Stop"] == [{"hooks": [ours("Stop")]}]


def test_ours_under_the_wrong_matcher_moves_to_a_group_of_its_own() -> None:
    doc = {"hooks": {"PostToolUse": [{"matcher": "Bash", "hooks": [ours("PostToolUse"),
                                                                   their("x")]}]}}
    new = merge_hooks(doc, hook_groups(EXE)).document
    assert new["hooks"]["PostToolUse"] == [
        {"matcher": "Bash", "hooks": [their("x")]},
        {"matcher": "*", "hooks": [ours("PostToolUse")]}]


def test_ours_twice_becomes_once() -> None:
    doc = {"hooks": {"Stop": [{"hooks": [ours("Stop", OLD)]}, {"hooks": [ours("Stop")]},
                              {"hooks": [their("y")]}]}}
    outcome = merge_hooks(doc, {"Stop": hook_groups(EXE)["Stop"]})
    assert outcome.document["hooks"]["Stop"] == [{"hooks": [their("y")]},
                                                 {"hooks": [ours("Stop")]}]
    assert outcome.changes[0].kind is ChangeKind.REPLACED
    assert OLD in (outcome.changes[0].previous or "")


@pytest.mark.parametrize(("hooks", "where", "must"), [
    ([], "hooks", "an object"),
    (None, "hooks", "an object"),
    ({"Stop": {}}, "hooks.Stop", "an array of matcher groups"),
    ({"PreToolUse": "x"}, "hooks.PreToolUse", "an array"),
    ({"Stop": ["echo hi"]}, "hooks.Stop[0]", "an object"),
    ({"Stop": [{"command": "x"}]}, "hooks.Stop[0].hooks", "an array"),
    ({"Stop": [{"hooks": {}}]}, "hooks.Stop[0].hooks", "an array"),
    ({"Stop": [{"hooks": [], "matcher": 3}]}, "hooks.Stop[0].matcher", "a string"),
    ({"Stop": [{"hooks": []}, {"hooks": ["echo"]}]}, "hooks.Stop[1].hooks[0]", "an object"),
])
def test_hooks_of_the_wrong_shape_are_refused(hooks: Any, where: str, must: str) -> None:
    for operation in (lambda d: merge_hooks(d, hook_groups(EXE)), remove_hooks):
        with pytest.raises(AgentSettingsInvalid) as info:
            operation({"hooks": hooks})
        assert info.value.fields["where"] == where
        assert f"{where} must be {must}" in info.value.detail


def test_remove_hooks_drops_only_what_it_emptied() -> None:
    doc = {"hooks": {
        "Stop": [{"hooks": []}, {"hooks": [ours("Stop")]}, {"hooks": [their("x"), ours("Stop")]}],
        "SessionEnd": [{"hooks": [ours("SessionEnd", OLD)]}],
        "PreToolUse": [],
        "SessionStart": [{"hooks": [ours("Stop")]}],  # not ours under SessionStart
    }}
    outcome = remove_hooks(doc)
    assert outcome.document == {"hooks": {
        "Stop": [{"hooks": []}, {"hooks": [their("x")]}],
        "PreToolUse": [],
        "SessionStart": [{"hooks": [ours("Stop")]}],
    }}
    assert [c.where for c in outcome.changes] == ["hooks.Stop", "hooks.SessionEnd"]


def test_remove_hooks_drops_hooks_when_it_emptied_it() -> None:
    assert remove_hooks(merge_hooks({"a": 1}, hook_groups(EXE)).document).document == {"a": 1}


def test_remove_without_entries_of_ours_returns_the_same_document() -> None:
    doc = {"hooks": {"Stop": [{"hooks": [their("x")]}], "X": []}, "mcpServers": {}}
    assert remove_hooks(doc).document is doc
    assert remove_mcp(doc).document is doc


def test_an_already_empty_container_filled_by_merge_goes_on_remove() -> None:
    """The one documented exception to remove(merge(x)) == x: the file cannot tell."""
    doc: dict[str, Any] = {"hooks": {"Stop": []}, "mcpServers": {}}
    merged = merge_mcp(merge_hooks(doc, hook_groups(EXE)).document, mcp_entry(EXE)).document
    assert remove_mcp(remove_hooks(merged).document).document == {}


# -- properties over random existing documents ----------------------------------------------

names = st.sampled_from([*EVENTS, "PreToolUse", "Notification", "SubagentStop"])
commands = st.one_of(
    st.text(max_size=20),
    st.builds(lambda e, a: f"/x/claudemesh hook {e} {a}", names,
              st.from_regex(r"[a-z-]{1,4}", fullmatch=True)),
    st.builds(lambda e: f"/x/claudemesh-other hook {e}", names),
    st.just("claudemesh mcp"))
hook_entries = st.one_of(
    st.fixed_dictionaries({"type": st.just("command"), "command": commands},
                          optional={"timeout": st.integers(1, 600)}),
    st.fixed_dictionaries({"type": st.sampled_from(["prompt", "agent"]),
                           "prompt": st.text(max_size=10)}))
json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=10)
groups = st.fixed_dictionaries({"hooks": st.lists(hook_entries, max_size=3)},
                               optional={"matcher": st.sampled_from(["*", "Bash", "", "startup"])})
hooks_objects = st.dictionaries(names, st.lists(groups, min_size=1, max_size=3), min_size=1,
                                max_size=5)
servers = st.dictionaries(st.text(max_size=8).filter(lambda n: n != "claudemesh"),
                          json_values, min_size=1, max_size=4)
other_keys = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in ("hooks", "mcpServers")), json_values,
    max_size=5)


@st.composite
def settings_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document with no entry of ours and no empty container where merge writes."""
    doc = draw(other_keys)
    if draw(st.booleans()):
        doc["hooks"] = draw(hooks_objects)
    if draw(st.booleans()):
        doc["mcpServers"] = draw(servers)
    assume(not any(is_our_hook(h, event) for event, gs in doc.get("hooks", {}).items()
                   for g in gs for h in g["hooks"]))
    return dict(sorted(doc.items(), key=lambda _: draw(st.integers())))  # any key order


def merge_all(doc: dict[str, Any], exe: str = EXE) -> dict[str, Any]:
    return merge_mcp(merge_hooks(doc, hook_groups(exe)).document, mcp_entry(exe)).document


def remove_all(doc: dict[str, Any]) -> dict[str, Any]:
    return remove_mcp(remove_hooks(doc).document).document


@settings(max_examples=300)
@given(settings_documents())
def test_remove_after_merge_gives_back_the_original_exactly(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    restored = remove_all(merge_all(doc))
    assert restored == before
    assert doc == before
    assert list(restored) == list(before)
    for event, groups_ in before.get("hooks", {}).items():
        assert restored["hooks"][event] == groups_


@settings(max_examples=200)
@given(settings_documents())
def test_merge_is_idempotent_and_leaves_exactly_one_hook_per_event(doc: dict[str, Any]) -> None:
    merged = merge_all(doc)
    assert not merge_hooks(merged, hook_groups(EXE)).changed
    assert not merge_mcp(merged, mcp_entry(EXE)).changed
    for event in EVENTS:
        assert count_ours(merged, event) == 1
    assert merged["mcpServers"]["claudemesh"] == mcp_entry(EXE)


@settings(max_examples=200)
@given(settings_documents(), st.sampled_from(EVENTS))
def test_merging_over_an_old_path_leaves_only_the_new_one(doc: dict[str, Any],
                                                          event: str) -> None:
    old = merge_all(doc, OLD)
    new = merge_all(old)
    for name in EVENTS:
        assert count_ours(new, name) == 1
    commands_ = [h.get("command") for g in new["hooks"][event] for h in g["hooks"]]
    assert hook_command(EXE, event) in commands_
    assert hook_command(OLD, event) not in commands_
    assert remove_all(new) == doc
