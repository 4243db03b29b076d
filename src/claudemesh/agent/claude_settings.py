"""Claude Code's configuration as values: merge our entries in, take them out again.

Theory of operation. ``claudemesh setup claude-code`` owns two things inside JSON
documents that otherwise belong to the user and to Claude Code:

- the MCP server named ``claudemesh`` under ``mcpServers`` (``.mcp.json`` for a
  project, ``~/.claude.json`` for the user);
- one command hook per event in :data:`HOOK_EVENTS` under ``hooks`` (the project's or
  the user's ``settings.json``), each ``{"matcher"?, "hooks": [{"type": "command",
  "command": "<claudemesh> hook <Event>", "timeout": 5}]}``.

Every function here is pure, document in, :class:`Outcome` out, and never mutates its
argument (changed paths are copied, everything else is shared). The rules:

1. **Never clobber.** Other servers, hooks and keys stay as they were, in their order.
   A new entry goes last; an entry of ours that differs is replaced where it stands.
2. **Ours is recognised by shape, not by memory**: the server named ``claudemesh``;
   a ``command`` hook whose command splits (shell words) into exactly
   ``<anything>/claudemesh hook <Event>`` and sits under ``hooks.<Event>``. An entry
   written with another path (an old venv) is therefore still ours.
3. **Idempotent.** When ours is already there and equal, the outcome has no changes and
   the very same document object comes back, so the caller writes nothing.
4. **Removal drops only what it emptied**: a matcher group, an event key, ``hooks`` or
   ``mcpServers`` goes when taking our entries out left it empty, never when it was
   empty already. Hence ``remove(merge(x)) == x`` for every ``x`` without entries of
   ours, except one case nothing in the file can tell apart: a container that was
   already empty (``"hooks": {}``) before merge filled it is dropped too.
5. **Refuse, never repair.** A ``mcpServers`` or ``hooks`` of the wrong shape raises
   :class:`AgentSettingsInvalid` naming the key path; the caller writes nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, Final

from claudemesh.agent.jsondoc import Document, type_name
from claudemesh.errors import AgentSettingsInvalid

__all__ = ["EXECUTABLE_NAME", "HOOK_EVENTS", "HOOK_TIMEOUT_S", "SERVER_NAME", "Change",
           "ChangeKind", "HookEvent", "Outcome", "check_hooks", "check_mcp",
           "hook_command", "hook_groups", "is_our_hook", "mcp_entry", "merge_hooks",
           "merge_mcp", "remove_hooks", "remove_mcp"]

SERVER_NAME: Final = "claudemesh"
EXECUTABLE_NAME: Final = "claudemesh"
HOOK_TIMEOUT_S: Final = 5  # seconds; a hook only talks to the local daemon


@dataclass(frozen=True, slots=True)
class HookEvent:
    name: str
    matcher: str | None  # None: the group has no "matcher" key (the event takes none)


# SessionStart could match startup|resume|clear|compact; without a matcher it gets all.
HOOK_EVENTS: Final = (
    HookEvent("SessionStart", None),
    HookEvent("UserPromptSubmit", None),
    HookEvent("PostToolUse", "*"),
    HookEvent("Stop", None),
    HookEvent("SessionEnd", None),
)


class ChangeKind(StrEnum):
    ADDED = "added"
    REPLACED = "replaced"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of ours that was added, replaced or removed, at key path ``where``."""

    kind: ChangeKind
    where: str  # "mcpServers.claudemesh", "hooks.Stop"
    previous: str | None = None  # what a replaced entry ran, to say so


@dataclass(frozen=True, slots=True)
class Outcome:
    document: Document
    changes: tuple[Change, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


# -- what we write ------------------------------------------------------------------------


def mcp_entry(executable: str) -> dict[str, Any]:
    """The stdio server entry: Claude Code runs ``<executable> mcp`` (no shell)."""
    return {"command": executable, "args": ["mcp"]}


def hook_command(executable: str, event: str) -> str:
    """A hook command is a shell line, so the path is quoted (a space in a venv path)."""
    return f"{shlex.quote(executable)} hook {event}"


def hook_groups(executable: str) -> dict[str, dict[str, Any]]:
    """Event name -> the one matcher group setup writes for it."""
    groups: dict[str, dict[str, Any]] = {}
    for event in HOOK_EVENTS:
        hook = {"type": "command", "command": hook_command(executable, event.name),
                "timeout": HOOK_TIMEOUT_S}
        group: dict[str, Any] = {} if event.matcher is None else {"matcher": event.matcher}
        group["hooks"] = [hook]
        groups[event.name] = group
    return groups


def is_our_hook(hook: Any, event: str) -> bool:
    """A command hook running ``<any path>/claudemesh hook <event>``, nothing more."""
    if not isinstance(hook, dict) or hook.get("type") != "command":
        return False
    command = hook.get("command")
    if not isinstance(command, str):
        return False
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: someone else's line, not ours
        return False
    return (len(words) == 3 and PurePosixPath(words[0]).name == EXECUTABLE_NAME
            and words[1:] == ["hook", event])


# -- shape checks ----------------------------------------------------------------------------


def _refuse(where: str, must: str, value: Any) -> AgentSettingsInvalid:
    return AgentSettingsInvalid(f"{where} must be {must}, not {type_name(value)}", where=where)


def check_mcp(doc: Document) -> dict[str, Any] | None:
    """``doc["mcpServers"]`` when it is an object, None when absent.

    Raises:
        AgentSettingsInvalid: it is anything else.
    """
    servers = doc.get("mcpServers")
    if servers is None and "mcpServers" not in doc:
        return None
    if not isinstance(servers, dict):
        raise _refuse("mcpServers", "an object", servers)
    return servers


def check_hooks(doc: Document) -> dict[str, Any] | None:
    """``doc["hooks"]`` when it has Claude Code's shape, None when absent.

    The shape: an object of event name -> array of matcher groups; a group is an object
    with a ``hooks`` array of objects and, optionally, a string ``matcher``.

    Raises:
        AgentSettingsInvalid: naming the first key path that breaks the shape.
    """
    hooks = doc.get("hooks")
    if hooks is None and "hooks" not in doc:
        return None
    if not isinstance(hooks, dict):
        raise _refuse("hooks", "an object", hooks)
    for event, groups in hooks.items():
        where = f"hooks.{event}"
        if not isinstance(groups, list):
            raise _refuse(where, "an array of matcher groups", groups)
        for index, group in enumerate(groups):
            _check_group(f"{where}[{index}]", group)
    return hooks


def _check_group(where: str, group: Any) -> None:
    if not isinstance(group, dict):
        raise _refuse(where, "an object", group)
    if "matcher" in group and not isinstance(group["matcher"], str):
        raise _refuse(f"{where}.matcher", "a string", group["matcher"])
    entries = group.get("hooks")
    if not isinstance(entries, list):
        raise _refuse(f"{where}.hooks", "an array", entries)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _refuse(f"{where}.hooks[{index}]", "an object", entry)


# -- mcpServers -----------------------------------------------------------------------------


def _same_server(existing: Any, entry: dict[str, Any]) -> bool:
    """Equal, or equal but for what ``claude mcp add`` spells out (stdio, empty env)."""
    if not isinstance(existing, dict):
        return False
    trimmed = dict(existing)
    if trimmed.get("type") == "stdio" and "type" not in entry:
        del trimmed["type"]
    if trimmed.get("env") == {} and "env" not in entry:
        del trimmed["env"]
    return trimmed == entry


def _server_summary(server: Any) -> str:
    if isinstance(server, dict) and isinstance(server.get("command"), str):
        args = server.get("args")
        words = [server["command"], *(a for a in args if isinstance(a, str))] \
            if isinstance(args, list) else [server["command"]]
        return shlex.join(words)
    return "an entry of another shape"


def merge_mcp(doc: Document, entry: dict[str, Any]) -> Outcome:
    """Put ``entry`` at ``mcpServers.claudemesh``; the same ``doc`` back when it is there."""
    servers = check_mcp(doc)
    where = f"mcpServers.{SERVER_NAME}"
    if servers is not None and SERVER_NAME in servers:
        if _same_server(servers[SERVER_NAME], entry):
            return Outcome(doc)
        change = Change(ChangeKind.REPLACED, where, _server_summary(servers[SERVER_NAME]))
    else:
        change = Change(ChangeKind.ADDED, where)
    new_servers = dict(servers or {})
    new_servers[SERVER_NAME] = entry  # an existing key keeps its place
    return Outcome({**doc, "mcpServers": new_servers}, (change,))


def remove_mcp(doc: Document) -> Outcome:
    """Take ``mcpServers.claudemesh`` out; drop ``mcpServers`` if that emptied it."""
    servers = check_mcp(doc)
    if servers is None or SERVER_NAME not in servers:
        return Outcome(doc)
    new_servers = {k: v for k, v in servers.items() if k != SERVER_NAME}
    new_doc = dict(doc)
    if new_servers:
        new_doc["mcpServers"] = new_servers
    else:
        del new_doc["mcpServers"]
    return Outcome(new_doc, (Change(ChangeKind.REMOVED, f"mcpServers.{SERVER_NAME}"),))


# -- hooks ------------------------------------------------------------------------------


def _strip_event(event: str, groups: list[Any]) -> tuple[list[Any], list[str]]:
    """The groups without our hooks (a group emptied by that goes), and what was taken."""
    kept: list[Any] = []
    taken: list[str] = []
    for group in groups:
        entries = group["hooks"]
        ours = [e for e in entries if is_our_hook(e, event)]
        if not ours:
            kept.append(group)
            continue
        taken += [e["command"] for e in ours]
        rest = [e for e in entries if not is_our_hook(e, event)]
        if rest:
            kept.append({**group, "hooks": rest})
    return kept, taken


def _same_matcher(group: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return ("matcher" in group) == ("matcher" in wanted) and \
        group.get("matcher") == wanted.get("matcher")


def _merge_event(event: str, groups: list[Any],
                 wanted: dict[str, Any]) -> tuple[list[Any], Change | None]:
    where = f"hooks.{event}"
    hook = wanted["hooks"][0]
    found = [(g, h) for g, group in enumerate(groups)
             for h, entry in enumerate(group["hooks"]) if is_our_hook(entry, event)]
    if len(found) == 1 and _same_matcher(groups[found[0][0]], wanted):
        g, h = found[0]
        old = groups[g]["hooks"][h]
        if old == hook:
            return groups, None
        new_group = {**groups[g], "hooks": [*groups[g]["hooks"][:h], hook,
                                            *groups[g]["hooks"][h + 1:]]}
        return ([*groups[:g], new_group, *groups[g + 1:]],
                Change(ChangeKind.REPLACED, where, old["command"]))
    kept, taken = _strip_event(event, groups)
    change = Change(ChangeKind.REPLACED, where, "; ".join(taken)) if taken \
        else Change(ChangeKind.ADDED, where)
    return [*kept, wanted], change


def merge_hooks(doc: Document, groups: Mapping[str, dict[str, Any]]) -> Outcome:
    """Make each ``hooks.<Event>`` hold our one hook, in a group with the right matcher.

    Ours, alone of its kind in a group with the wanted matcher, is replaced in place
    (the group's other hooks stay); ours anywhere else (twice, or under another
    matcher) is taken out and our group appended, so the result has exactly one.
    """
    hooks = check_hooks(doc)
    new_hooks = dict(hooks or {})
    changes: list[Change] = []
    for event, wanted in groups.items():
        merged, change = _merge_event(event, new_hooks.get(event, []), wanted)
        if change is not None:
            new_hooks[event] = merged
            changes.append(change)
    if not changes:
        return Outcome(doc)
    return Outcome({**doc, "hooks": new_hooks}, tuple(changes))


def remove_hooks(doc: Document) -> Outcome:
    """Take every hook of ours out, under any event; drop only what that emptied."""
    hooks = check_hooks(doc)
    if hooks is None:
        return Outcome(doc)
    new_hooks: dict[str, Any] = {}
    changes: list[Change] = []
    for event, groups in hooks.items():
        kept, taken = _strip_event(event, groups)
        if not taken:
            new_hooks[event] = groups
            continue
        changes.append(Change(ChangeKind.REMOVED, f"hooks.{event}"))
        if kept:
            new_hooks[event] = kept
    if not changes:
        return Outcome(doc)
    new_doc = dict(doc)
    if new_hooks:
        new_doc["hooks"] = new_hooks
    else:
        del new_doc["hooks"]
    return Outcome(new_doc, tuple(changes))
