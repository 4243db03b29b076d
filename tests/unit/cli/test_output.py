from __future__ import annotations

from claudemesh.cli.output import format_duration, format_table


def test_format_table_aligns_and_shows_none_as_dash() -> None:
    text = format_table(["A", "LONGER"], [("x", None), ("yyyy", 2)])
    assert text.splitlines() == ["A     LONGER", "x     -", "yyyy  2"]


def test_format_duration() -> None:
    assert format_duration(3.25) == "3.2s"
    assert format_duration(61) == "1m 1s"
    assert format_duration(93784) == "1d 2h 3m 4s"
    assert format_duration(3600) == "1h 0m 0s"
