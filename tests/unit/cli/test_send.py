"""``claudemesh send``'s own parsing and its report, without a daemon (the send itself is
tests/integration/e2e/test_cli_send.py)."""

from __future__ import annotations

import io
import json

import pytest

from claudemesh.cli.output import PRINTER
from claudemesh.cli.send import _message_text, _meta, _report
from claudemesh.errors import InvalidRequest

BODY = {"to": "bob", "message": "hi", "priority": "next", "client_message_id": "c-1"}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_meta_is_a_json_object() -> None:
    assert _meta('{"k": [1, "é"]}') == {"k": [1, "é"]}
    with pytest.raises(InvalidRequest, match="--meta is not JSON"):
        _meta("{k: 1}")
    with pytest.raises(InvalidRequest, match="--meta must be a JSON object"):
        _meta("[1]")


def test_the_message_argument_wins_and_dash_reads_standard_input(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("from a pipe\n"))
    assert _message_text("as an argument") == "as an argument"
    assert _message_text("-") == "from a pipe\n"


def test_no_message_reads_a_pipe_but_refuses_a_terminal_or_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("piped"))
    assert _message_text(None) == "piped"
    monkeypatch.setattr("sys.stdin", Tty("typed"))
    with pytest.raises(InvalidRequest, match="pipe it on standard input"):
        _message_text(None)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(InvalidRequest, match="the message is empty"):
        _message_text("-")


@pytest.fixture
def text_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PRINTER, "json", False)


@pytest.mark.usefixtures("text_mode")
@pytest.mark.parametrize(("status", "line", "code"), [
    ("delivered", "delivered to bob: the broker accepted it (c-1)", 0),
    ("queued", "queued to bob: stored; it goes out when the broker is reachable (c-1)", 0),
    ("failed", "failed to bob: the broker refused it (c-1)", 1)])
def test_the_report_line_and_exit_status(capsys: pytest.CaptureFixture[str], status: str,
                                         line: str, code: int) -> None:
    assert _report(status, BODY, {"id": "r-1", "mesh": "demo"}) == code
    assert capsys.readouterr().out == line + "\n"


@pytest.mark.usefixtures("text_mode")
def test_a_note_goes_on_its_own_indented_line(capsys: pytest.CaptureFixture[str]) -> None:
    _report("delivered", BODY, {}, note="already sent earlier")
    assert capsys.readouterr().out.splitlines() == [
        "delivered to bob: the broker accepted it (c-1)", "  already sent earlier"]


def test_the_json_report_takes_the_row_fields_from_either_answer(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(PRINTER, "json", True)
    _report("queued", {**BODY, "mesh": "work"}, {"outbox_id": "r-9"})  # a /v1/send answer
    assert json.loads(capsys.readouterr().out) == {
        "status": "queued", "client_message_id": "c-1", "to": "bob", "mesh": "work",
        "outbox_id": "r-9", "broker_message_id": None}
    _report("failed", BODY, {"id": "r-1", "mesh": "demo", "broker_message_id": None},
            note="destination_not_found")  # an outbox row
    assert json.loads(capsys.readouterr().out) == {
        "status": "failed", "client_message_id": "c-1", "to": "bob", "mesh": "demo",
        "outbox_id": "r-1", "broker_message_id": None, "note": "destination_not_found"}
