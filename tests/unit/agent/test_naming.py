"""agent.naming: which session name and harness an agent process registers under."""

from __future__ import annotations

import pytest

from claudemesh.agent.naming import candidates, harness, sanitise, session_name
from claudemesh.errors import InvalidRequest
from claudemesh.protocol.destination import NAME_RE


@pytest.mark.parametrize(("raw", "name"), [
    ("claudemesh", "claudemesh"), ("My Project!", "My-Project-"), ("a.b_c-d", "a.b_c-d"),
    ("..hidden", "hidden"), ("--x", "x"), ("é-café", "caf-"), ("", "session"),
    ("!!!", "session"), ("x" * 80, "x" * 64), ("日本語", "session"),
])
def test_sanitise(raw: str, name: str) -> None:
    assert sanitise(raw) == name
    assert NAME_RE.fullmatch(sanitise(raw))


def test_flag_then_environment_then_directory() -> None:
    env = {"CLAUDEMESH_SESSION": "from-env"}
    assert session_name("flag", env, "/work/repo") == "flag"
    assert session_name(None, env, "/work/repo") == "from-env"
    assert session_name(None, {}, "/work/my repo") == "my-repo"
    assert session_name(None, {"CLAUDEMESH_SESSION": ""}, "/") == "session"


@pytest.mark.parametrize(("flag", "env", "source"), [
    ("-bad", {}, "--session"), ("a b", {}, "--session"), ("x" * 65, {}, "--session"),
    (None, {"CLAUDEMESH_SESSION": "no/slash"}, "$CLAUDEMESH_SESSION"),
])
def test_explicit_names_are_checked_not_changed(flag: str | None, env: dict[str, str],
                                                source: str) -> None:
    pattern = f"invalid_request: {source.replace('$', '[$]')} .* is not a session name"
    with pytest.raises(InvalidRequest, match=pattern):
        session_name(flag, env, "/work/repo")


def test_candidates_stay_within_the_pattern() -> None:
    assert list(candidates("w")) == ["w", *(f"w-{n}" for n in range(2, 10))]
    long = list(candidates("y" * 64))
    assert long[0] == "y" * 64 and long[1] == "y" * 62 + "-2"
    assert all(NAME_RE.fullmatch(c) for c in long)


def test_harness() -> None:
    assert harness({"CLAUDECODE": "1"}) == "claude-code"
    assert harness({}) == "mcp" and harness({"CLAUDECODE": "0"}, default="hook") == "hook"
