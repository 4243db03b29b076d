from __future__ import annotations

import io
import json

import pytest

from claudemesh.cli.output import Printer, format_duration, format_table, paint
from claudemesh.errors import UnknownMesh


def test_format_table_aligns_and_shows_none_as_dash() -> None:
    text = format_table(["A", "LONGER"], [("x", None), ("yyyy", 2)])
    assert text.splitlines() == ["A     LONGER", "x     -", "yyyy  2"]


def test_format_duration() -> None:
    assert format_duration(3.25) == "3.2s"
    assert format_duration(61) == "1m 1s"
    assert format_duration(93784) == "1d 2h 3m 4s"
    assert format_duration(3600) == "1h 0m 0s"


def test_format_table_with_no_rows_is_the_header_line_alone() -> None:
    assert format_table(["ID", "STATUS"], []) == "ID  STATUS"


def test_format_table_leaves_no_trailing_spaces() -> None:
    assert format_table(["NAME", "X"], [("a", ""), ("bb", None)]).splitlines() == [
        "NAME  X", "a", "bb    -"]


def test_format_table_refuses_a_row_of_another_width() -> None:
    with pytest.raises(ValueError, match="zip"):
        format_table(["A", "B"], [("only one",)])


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0.0s"), (59.94, "59.9s"), (60, "1m 0s"), (86_400, "1d 0h 0m 0s"),
    (90_061.9, "1d 1h 1m 1s")])
def test_format_duration_boundaries(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_paint_colours_only_a_terminal_and_never_with_no_color(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert paint("ok", "green", stream=Tty()) == "\033[32mok\033[0m"
    assert paint("ok", "bold", stream=Tty()) == "\033[1mok\033[0m"
    assert paint("ok", "green", stream=io.StringIO()) == "ok"
    assert paint("ok", "green") == "ok"  # stdout, captured here: not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint("ok", "green", stream=Tty()) == "ok"


def test_a_result_is_its_text_with_one_newline_or_one_json_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    printer = Printer()
    printer.result({"a": 1}, "done\n\n")
    printer.result({"a": 1}, "")  # no text: nothing at all
    assert capsys.readouterr() == ("done\n", "")
    printer.json = True
    printer.result({"name": "é", "n": [1, None]}, "ignored")
    assert capsys.readouterr() == ('{"name":"é","n":[1,null]}\n', "")


def test_an_error_goes_to_stderr_as_text_or_to_stdout_as_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    printer = Printer()
    printer.error(UnknownMesh("no mesh 'x'", mesh="x"))
    assert capsys.readouterr() == ("", "error: no mesh 'x' [unknown_mesh]\n")
    printer.json = True
    printer.error(UnknownMesh("no mesh 'x'", mesh="x"))
    assert json.loads(capsys.readouterr().out) == {
        "error": "unknown_mesh", "detail": "no mesh 'x'", "mesh": "x"}
