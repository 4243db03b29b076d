"""Which session name and harness an agent process registers under (docs/api.md, sessions).

Pure and stdlib-only, shared by ``claudemesh mcp`` and the hook commands so both name a
Claude Code window's session the same way: ``--session``, else ``$CLAUDEMESH_SESSION``,
else the basename of the working directory made to fit the session-name pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import Final

from claudemesh.errors import InvalidRequest
from claudemesh.protocol.destination import NAME_RE

__all__ = ["ENV_SESSION", "FALLBACK_NAME", "MAX_SUFFIX", "candidates", "harness",
           "sanitise", "session_name"]

ENV_SESSION: Final = "CLAUDEMESH_SESSION"
FALLBACK_NAME: Final = "session"
MAX_SUFFIX: Final = 9  # name, name-2 ... name-9
NAME_MAX: Final = 64

_OUTSIDE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_LEADING: Final = re.compile(r"^[^A-Za-z0-9]+")


def sanitise(raw: str) -> str:
    """``raw`` made into a valid session name: other characters become ``-``."""
    name = _LEADING.sub("", _OUTSIDE.sub("-", raw))[:NAME_MAX]
    return name if NAME_RE.fullmatch(name) else FALLBACK_NAME


def session_name(flag: str | None, env: Mapping[str, str], cwd: str) -> str:
    """The name asked for: the flag, else the environment, else the directory's basename.

    Raises:
        InvalidRequest: the flag or ``$CLAUDEMESH_SESSION`` is not a valid session name
            (an explicit name is never silently changed).
    """
    for source, value in (("--session", flag), (f"${ENV_SESSION}", env.get(ENV_SESSION))):
        if value:
            if not NAME_RE.fullmatch(value):
                raise InvalidRequest(
                    f"{source} {value!r} is not a session name: 1-64 letters, digits,"
                    " '.', '_' or '-', starting with a letter or digit")
            return value
    return sanitise(PurePath(cwd).name)


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``name-2`` ... ``name-9``, each within the 64-character limit."""
    yield name
    for n in range(2, MAX_SUFFIX + 1):
        suffix = f"-{n}"
        yield name[:NAME_MAX - len(suffix)] + suffix


def harness(env: Mapping[str, str], default: str = "mcp") -> str:
    """``claude-code`` when Claude Code started us (it sets CLAUDECODE=1), else ``default``."""
    return "claude-code" if env.get("CLAUDECODE") == "1" else default
