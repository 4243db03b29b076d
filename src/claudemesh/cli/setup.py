"""``claudemesh setup``: write the configuration that makes an agent use claudemesh.

``setup claude-code`` merges the ``claudemesh`` MCP server and our hooks into Claude
Code's files (the rules are in :mod:`claudemesh.agent.claude_settings`, the file
handling in :mod:`claudemesh.agent.claude_setup`); ``setup mcp --print`` prints the
server entry for any other MCP client. Both only write configuration: the ``mcp``
server and the ``hook`` commands it names are other commands.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from claudemesh.agent.claude_settings import EXECUTABLE_NAME, SERVER_NAME, mcp_entry
from claudemesh.agent.claude_setup import Action, FilePlan, Scope, find_executable, run
from claudemesh.agent.jsondoc import render_diff
from claudemesh.cli.common import json_option
from claudemesh.cli.output import PRINTER

__all__ = ["format_plans", "plans_to_json", "setup"]

_NOTE_APPROVE = ("Claude Code asks once to approve the project MCP server `claudemesh` from "
                 ".mcp.json (or list it in `enabledMcpjsonServers` in your settings).")
_NOTE_CHANNELS = ("Pushing messages into a running session uses channels (a research "
                  "preview): start Claude Code with "
                  "`claude --dangerously-load-development-channels server:claudemesh`.")
_NOTE_RESTART = "Sessions already running load the change when restarted."


_NOTE_MACHINE_PATH = ("The command is this machine's path to claudemesh: teammates who share"
                      " these files need it at that path. With claudemesh on PATH, setup"
                      " writes the plain name instead; or use --user.")


def _executable() -> str:
    return find_executable(interpreter=sys.executable, path_env=os.environ.get("PATH"))


def _portable(executable: str) -> str:
    """For files a project shares: the bare name when ``PATH`` finds this very executable
    (it then works on every teammate's machine that has claudemesh installed)."""
    found = shutil.which(EXECUTABLE_NAME, path=os.environ.get("PATH"))
    if found is not None and Path(found).resolve() == Path(executable).resolve():
        return EXECUTABLE_NAME
    return executable


_DRY_VERBS = {Action.CREATED: "would create", Action.UPDATED: "would update",
              Action.UNCHANGED: "unchanged"}


def _summary(plan: FilePlan) -> str:
    """``added hooks.Stop, hooks.SessionEnd; replaced mcpServers.claudemesh (was: ...)``."""
    parts: list[str] = []
    plain: dict[str, list[str]] = {}
    for change in plan.changes:
        if change.previous:
            parts.append(f"{change.kind.value} {change.where} (was: {change.previous})")
        else:
            plain.setdefault(change.kind.value, []).append(change.where)
    return "; ".join([*(f"{kind} {', '.join(w)}" for kind, w in plain.items()), *parts])


def _describe(plan: FilePlan, *, dry_run: bool = False) -> str:
    if plan.action is Action.REMOVED:  # every change is a removal: name only where
        verb = "would remove from" if dry_run else "removed from"
        return f"{verb} {plan.target.path}: {', '.join(c.where for c in plan.changes)}"
    verb = _DRY_VERBS[plan.action] if dry_run else plan.action.value
    line = f"{verb} {plan.target.path}"
    summary = _summary(plan)
    return f"{line}: {summary}" if summary else line


def _preview(plan: FilePlan) -> str:
    """What --dry-run shows of one file: the new content, a diff, or a line."""
    head = _describe(plan, dry_run=True)
    if plan.new is None:
        return head
    new = plan.new.decode("utf-8")
    if plan.old is None:
        return f"{head}\n{new}"
    return f"{head}\n{render_diff(str(plan.target.path), plan.old.decode('utf-8'), new)}"


def format_plans(plans: list[FilePlan], *, dry_run: bool, notes: list[str]) -> str:
    """The text report: one line per file (with its diff when dry), then the notes."""
    lines = [_preview(p) if dry_run else _describe(p) for p in plans]
    if dry_run:
        lines.append("dry run: nothing was written")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def plans_to_json(plans: list[FilePlan], *, scope: str, executable: str | None, dry_run: bool,
                  remove: bool, notes: list[str]) -> dict[str, Any]:
    """The ``--json`` report: every file with its action and changes, and the notes."""
    files = []
    for plan in plans:
        item: dict[str, Any] = {
            "path": str(plan.target.path), "action": plan.action.value,
            "changes": [{"change": c.kind.value, "where": c.where, "previous": c.previous}
                        for c in plan.changes]}
        if dry_run and plan.new is not None:
            new = plan.new.decode("utf-8")
            if plan.old is None:
                item["content"] = new
            else:
                item["diff"] = render_diff(str(plan.target.path), plan.old.decode("utf-8"), new)
        files.append(item)
    return {"scope": scope, "executable": executable, "dry_run": dry_run, "remove": remove,
            "files": files, "notes": notes}


def _notes(scope: Scope, *, remove: bool, changed: bool) -> list[str]:
    if remove:
        return [_NOTE_RESTART] if changed else []
    notes = [_NOTE_APPROVE] if scope is Scope.PROJECT else []
    notes.append(_NOTE_CHANNELS)
    if changed:
        notes.append(_NOTE_RESTART)
    return notes


@click.group()
def setup() -> None:
    """Connect an agent to claudemesh by writing its configuration."""


@setup.command("claude-code")
@click.option("--project", "project_dir", metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Write DIR/.mcp.json and DIR/.claude/settings.json (default: the "
                   "current directory).")
@click.option("--user", "user_scope", is_flag=True,
              help="Write ~/.claude.json and ~/.claude/settings.json instead.")
@click.option("--dry-run", is_flag=True, help="Show the changes; write nothing.")
@click.option("--remove", is_flag=True, help="Take out what setup added, and nothing else.")
@json_option
def claude_code(project_dir: Path | None, user_scope: bool, dry_run: bool, remove: bool) -> int:
    """Add the claudemesh MCP server and hooks to Claude Code's settings.

    Merges into the existing files: other servers, hooks and keys stay as they are,
    running it again changes nothing, and a file that is not valid JSON of the
    expected shape is refused (exit 2) and left alone.
    """
    if project_dir is not None and user_scope:
        raise click.UsageError("--project and --user exclude each other")
    scope = Scope.USER if user_scope else Scope.PROJECT
    executable = None if remove else _executable()
    if executable is not None and scope is Scope.PROJECT:
        executable = _portable(executable)
    project = (project_dir or Path.cwd()).absolute()
    plans = run(scope, project_dir=project, home=Path.home(), executable=executable,
                dry_run=dry_run)
    notes = _notes(scope, remove=remove, changed=any(p.changes for p in plans))
    if scope is Scope.PROJECT and executable not in (None, EXECUTABLE_NAME):
        notes.insert(0, _NOTE_MACHINE_PATH)
    data = plans_to_json(plans, scope=scope.value, executable=executable, dry_run=dry_run,
                         remove=remove, notes=notes)
    PRINTER.result(data, format_plans(plans, dry_run=dry_run, notes=notes))
    return 0


@setup.command("mcp")
@click.option("--print", "print_config", is_flag=True,
              help="Print the server entry for an MCP client's configuration.")
@json_option
def mcp(print_config: bool) -> int:
    """Print the claudemesh MCP server entry, for MCP clients other than Claude Code."""
    if not print_config:
        raise click.UsageError("say --print: other clients keep their configuration in "
                               "places of their own, so setup prints the entry to paste")
    data = {"mcpServers": {SERVER_NAME: mcp_entry(_executable())}}
    PRINTER.result(data, json.dumps(data, indent=2))
    sys.stderr.write("Add this to your MCP client's configuration (its \"mcpServers\" "
                     "section); the client then runs `claudemesh mcp` over stdio.\n")
    return 0
