"""Strict parsing and layout-keeping rendering of agent settings files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claudemesh.agent.jsondoc import (
    DEFAULT_STYLE,
    Style,
    detect_style,
    encode_document,
    parse_document,
    render_diff,
    render_document,
)
from claudemesh.errors import AgentSettingsInvalid

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
documents = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@pytest.mark.parametrize(("text", "reason"), [
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": NaN}', "NaN"),
    ('{"a": -Infinity}', "Infinity"),
    ("[1, 2]", "must be a JSON object"),
    ('"text"', "must be a JSON object"),
    ("", "empty"),
    ("   \n", "empty"),
    ('{"a": 1,}', "not valid JSON"),
    ('{"a": 1}\n{"b": 2}', "not valid JSON"),
    ("\ufeff{}", "not valid JSON"),
])
def test_parse_refuses_what_rewriting_would_change(text: str, reason: str) -> None:
    with pytest.raises(AgentSettingsInvalid) as info:
        parse_document(text)
    assert reason in info.value.detail
    assert info.value.exit_code == 2


def test_parse_keeps_key_order() -> None:
    assert list(parse_document('{"z": 1, "a": 2, "m": 3}')) == ["z", "a", "m"]


@pytest.mark.parametrize(("text", "style"), [
    ("{}", Style(2, "\n", False)),
    ("{}\n", Style(2, "\n", True)),
    ('{\n  "a": 1\n}\n', Style(2, "\n", True)),
    ('{\n    "a": 1\n}', Style(4, "\n", False)),
    ('{\n\t"a": 1\n}\n', Style("\t", "\n", True)),
    ('{\r\n  "a": 1\r\n}\r\n', Style(2, "\r\n", True)),
    ('{"a": {"b": 1}}\n', Style(2, "\n", True)),
])
def test_detect_style(text: str, style: Style) -> None:
    assert detect_style(text) == style


@pytest.mark.parametrize("text", [
    '{\n  "a": [\n    1,\n    "é"\n  ],\n  "b": {},\n  "c": []\n}',
    '{\n    "a": {\n        "b": null\n    }\n}\n',
    '{\r\n  "a": true\r\n}\r\n',
    '{\n\t"a": "x"\n}\n',
])
def test_a_file_in_a_style_we_detect_comes_back_byte_for_byte(text: str) -> None:
    assert render_document(parse_document(text), detect_style(text)) == text


@given(documents)
def test_claude_code_layout_round_trips(doc: dict[str, object]) -> None:
    """Claude Code writes JSON.stringify(doc, null, 2): the same bytes as indent=2 here."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: covered below
    assert render_document(parse_document(text), detect_style(text)) == text


def test_a_lone_surrogate_is_written_escaped_and_reads_back_the_same() -> None:
    doc = parse_document('{"a": "\\ud800", "b": "é"}')
    data = encode_document(doc, DEFAULT_STYLE)
    assert parse_document(data.decode("utf-8")) == doc
    assert data.endswith(b"\n")


def test_render_diff_marks_a_missing_final_newline() -> None:
    diff = render_diff("f.json", "{}", '{\n  "a": 1\n}\n')
    assert diff.startswith("--- f.json (now)\n+++ f.json (after)\n")
    assert "-{}\n\\ No newline at end of file\n" in diff
    assert '+  "a": 1\n' in diff
