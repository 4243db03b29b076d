"""The I/O around :mod:`claude_settings`: which files, read them, write them atomically.

``setup claude-code`` touches two files per scope (:func:`targets`). Both are read and
planned before either is written, so a refused file (invalid JSON, wrong shape) leaves
both untouched. Each write goes to a temp file in the same directory, is fsynced, and
renamed over the original with the original's mode; a symlink (a dotfiles checkout) is
followed, so the link stays and its target is updated. Claude Code rewrites
``~/.claude.json`` while it runs, so just before the rename the file is read again: if
it changed since we planned, the temp file is dropped and the plan made again from the
new content (at most :data:`PLAN_ATTEMPTS` times).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from claudemesh.agent import claude_settings as cs
from claudemesh.agent.jsondoc import Document, detect_style, encode_document, parse_document
from claudemesh.errors import AgentSettingsInvalid, AgentSettingsWriteFailed, ExecutableNotFound

__all__ = ["PLAN_ATTEMPTS", "Action", "FileKind", "FilePlan", "Scope", "Target",
           "apply_plan", "find_executable", "plan_file", "run", "targets"]

PLAN_ATTEMPTS: Final = 3


class Scope(StrEnum):
    PROJECT = "project"
    USER = "user"


class FileKind(StrEnum):
    MCP = "mcp"  # holds mcpServers
    SETTINGS = "settings"  # holds hooks


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REMOVED = "removed"  # --remove took our entries out; the file itself stays


@dataclass(frozen=True, slots=True)
class Target:
    path: Path
    kind: FileKind
    new_mode: int  # for a file we create; an existing file keeps its own
    new_dir_mode: int = 0o755


def targets(scope: Scope, *, project_dir: Path, home: Path) -> tuple[Target, Target]:
    """The MCP file and the settings file of a scope (Claude Code's documented places)."""
    if scope is Scope.USER:
        return (Target(home / ".claude.json", FileKind.MCP, 0o600, 0o700),
                Target(home / ".claude" / "settings.json", FileKind.SETTINGS, 0o600, 0o700))
    return (Target(project_dir / ".mcp.json", FileKind.MCP, 0o644),
            Target(project_dir / ".claude" / "settings.json", FileKind.SETTINGS, 0o644))


def find_executable(*, interpreter: str, path_env: str | None) -> str:
    """The absolute path of the ``claudemesh`` console script.

    The one beside the running interpreter first (same venv, so the same version of
    the code), then the first on ``PATH``. Not resolved: a venv's ``bin`` is the point.

    Raises:
        ExecutableNotFound: neither exists; the message says how to fix it.
    """
    if interpreter:
        beside = Path(interpreter).parent / cs.EXECUTABLE_NAME
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside.absolute())
    found = shutil.which(cs.EXECUTABLE_NAME, path=path_env)
    if found:
        return str(Path(found).absolute())
    raise ExecutableNotFound(
        f"no `{cs.EXECUTABLE_NAME}` executable beside {interpreter or 'this Python'} or on "
        f"PATH; install claudemesh so its console script exists (`pip install claudemesh`, "
        f"or `pip install -e .` in a checkout, inside the venv you use), or add the "
        f"directory holding it to PATH, then run setup again")


@dataclass(frozen=True, slots=True)
class FilePlan:
    target: Target
    real_path: Path  # the file written: target.path, or where its symlink points
    old: bytes | None  # None: the file does not exist
    new: bytes | None  # None: nothing to write
    changes: tuple[cs.Change, ...]
    action: Action


def _read(target: Target) -> tuple[Path, bytes | None]:
    real = Path(os.path.realpath(target.path))
    try:
        info = real.stat()
    except FileNotFoundError:
        return real, None
    except OSError as exc:
        raise _invalid(target, f"cannot read it: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _invalid(target, "it is not a regular file")
    try:
        return real, real.read_bytes()
    except OSError as exc:
        raise _invalid(target, f"cannot read it: {exc.strerror or exc}") from exc


def _invalid(target: Target, reason: str, where: str = "") -> AgentSettingsInvalid:
    return AgentSettingsInvalid(f"{target.path}: {reason}; nothing was written",
                                path=str(target.path), where=where)


def _transform(kind: FileKind, doc: Document, executable: str | None) -> cs.Outcome:
    """Setup when given the executable, --remove when not."""
    if kind is FileKind.MCP:
        return cs.merge_mcp(doc, cs.mcp_entry(executable)) if executable \
            else cs.remove_mcp(doc)
    return cs.merge_hooks(doc, cs.hook_groups(executable)) if executable \
        else cs.remove_hooks(doc)


def plan_file(target: Target, *, executable: str | None) -> FilePlan:
    """What setup (``executable`` given) or --remove (None) would make of one file.

    Raises:
        AgentSettingsInvalid: the file is unreadable, not UTF-8 JSON, or of the wrong shape.
    """
    real, old = _read(target)
    if old is None:
        if executable is None:  # nothing of ours in a file that does not exist
            return FilePlan(target, real, None, None, (), Action.UNCHANGED)
        outcome = _transform(target.kind, {}, executable)
        return FilePlan(target, real, None, encode_document(outcome.document),
                        outcome.changes, Action.CREATED)
    try:
        text = old.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(target, f"not UTF-8 (byte {exc.start})") from exc
    try:
        outcome = _transform(target.kind, parse_document(text), executable)
    except AgentSettingsInvalid as exc:
        where = str(exc.fields.get("where", ""))
        raise _invalid(target, exc.detail, where) from exc
    if not outcome.changed:
        return FilePlan(target, real, old, None, (), Action.UNCHANGED)
    style = detect_style(text)
    action = Action.REMOVED if executable is None else Action.UPDATED
    return FilePlan(target, real, old, encode_document(outcome.document, style),
                    outcome.changes, action)


class _Changed(Exception):
    """The file is no longer what the plan was made from; never leaves :func:`run`."""


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace_if_unchanged(tmp: Path, path: Path, expected: bytes | None) -> None:
    if _current(path) != expected:
        raise _Changed
    tmp.replace(path)


def _write_atomically(plan: FilePlan, data: bytes) -> None:
    path = plan.real_path
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=plan.target.new_dir_mode, parents=True)
    mode, owner = plan.target.new_mode, None
    if plan.old is not None:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise _Changed from None  # deleted since we read it
        mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None and os.geteuid() == 0 and owner != (os.getuid(), os.getgid()):
                os.fchown(handle.fileno(), *owner)  # root editing a user's file keeps it theirs
            os.fsync(handle.fileno())
        _replace_if_unchanged(tmp, path, plan.old)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply_plan(plan: FilePlan) -> None:
    """Write ``plan.new`` over the file, if the file is still ``plan.old``.

    Raises:
        _Changed: it is not (the caller plans again).
        AgentSettingsWriteFailed: the file system refused.
    """
    if plan.new is None:
        return
    try:
        _write_atomically(plan, plan.new)
    except OSError as exc:
        raise AgentSettingsWriteFailed(
            f"{plan.target.path}: cannot write it: {exc.strerror or exc}",
            path=str(plan.target.path)) from exc


def run(scope: Scope, *, project_dir: Path, home: Path, executable: str | None,
        dry_run: bool, before_write: Callable[[], None] | None = None) -> list[FilePlan]:
    """Plan both files of ``scope``, then (unless ``dry_run``) write the changed ones.

    ``executable`` None means --remove. ``before_write`` runs between planning and
    writing; tests use it to change a file at that moment.

    Returns:
        One plan per file, as carried out: a file written on an earlier attempt (and so
        unchanged on the last one) is reported with the plan that wrote it.

    Raises:
        AgentSettingsInvalid: a file is refused; nothing was written.
        AgentSettingsWriteFailed: a write failed, or the files kept changing.
    """
    files = targets(scope, project_dir=project_dir, home=home)
    written: dict[Path, FilePlan] = {}
    for _ in range(PLAN_ATTEMPTS):
        plans = [plan_file(t, executable=executable) for t in files]
        if dry_run:
            return plans
        if before_write is not None:
            before_write()
        try:
            for plan in plans:
                apply_plan(plan)
                if plan.new is not None:
                    written[plan.target.path] = plan
        except _Changed:
            continue
        return [written.get(p.target.path, p) if p.new is None else p for p in plans]
    raise AgentSettingsWriteFailed(
        f"{', '.join(str(t.path) for t in files)} kept changing while setup wrote them "
        f"(is Claude Code rewriting them?); run setup again",
        path=", ".join(str(t.path) for t in files))
