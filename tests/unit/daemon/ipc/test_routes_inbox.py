"""``GET /v1/inbox``'s query string as an InboxFilter (routes_inbox.parse_inbox_query).

The route itself is tests/integration/test_bad_input.py and the e2e tests; here each
parameter of docs/api.md, and each way to get one wrong, on a real DaemonContext.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from multidict import MultiDict, MultiDictProxy

from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.ipc.routes_inbox import parse_inbox_query
from claudemesh.daemon.store.inbox import InboxFilter
from claudemesh.errors import InvalidRequest, UnknownMesh


@pytest.fixture
def ctx(make_context: Callable[..., DaemonContext]) -> DaemonContext:
    return make_context("demo", "work")


def parse(ctx: DaemonContext, session: str | None = None, **params: str) -> InboxFilter:
    if "from_" in params:
        params["from"] = params.pop("from_")
    return parse_inbox_query(ctx, MultiDictProxy(MultiDict(params)), session)


def refused(ctx: DaemonContext, session: str | None = None, **params: str) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(ctx, session, **params)
    return caught.value.detail


def test_no_parameters_is_the_newest_hundred_of_every_mesh(ctx: DaemonContext) -> None:
    assert parse(ctx) == InboxFilter(limit=100, ascending=False)


def test_every_parameter_lands_in_its_field(ctx: DaemonContext) -> None:
    got = parse(ctx, "build", mesh="work", from_="bob smith", topic="#news",
                since="2026-11-26T15:00:00+01:00", limit="7", cursor="42", order="asc",
                unread="1")
    assert got == InboxFilter(
        mesh="work", sender="bob smith", topic="news",
        since_ms=int(datetime(2026, 11, 26, 14, tzinfo=UTC).timestamp() * 1000), limit=7,
        cursor=42, ascending=True, session="build", unread=True)


@pytest.mark.parametrize(("topic", "expected"), [
    ("news", "news"), ("#news", "news"), ("@ops", "@ops"), ("*", "*"), ("", None)])
def test_a_topic_is_matched_without_its_hash(ctx: DaemonContext, topic: str,
                                             expected: str | None) -> None:
    assert parse(ctx, topic=topic).topic == expected


def test_empty_values_mean_not_given(ctx: DaemonContext) -> None:
    assert parse(ctx, mesh="", from_="", topic="", since="", cursor="") == InboxFilter()


def test_a_trailing_z_is_utc(ctx: DaemonContext) -> None:
    assert parse(ctx, since="1970-01-01T00:00:01.5Z").since_ms == 1500


def test_an_unknown_parameter_is_named(ctx: DaemonContext) -> None:
    assert refused(ctx, limit="5", sender="bob", zz="1") == "unknown query parameter 'sender'"


@pytest.mark.parametrize("value", ["0", "false"])
def test_unread_off_needs_no_session(ctx: DaemonContext, value: str) -> None:
    assert parse(ctx, unread=value).unread is False


@pytest.mark.parametrize("value", ["1", "true"])
def test_unread_on_needs_a_session(ctx: DaemonContext, value: str) -> None:
    assert "needs session" in refused(ctx, unread=value)
    assert parse(ctx, "build", unread=value).unread is True


@pytest.mark.parametrize("value", ["yes", "2", "True", ""])
def test_unread_takes_only_one_and_zero(ctx: DaemonContext, value: str) -> None:
    assert refused(ctx, "build", unread=value) == "unread must be 1 or 0"


def test_a_mesh_this_daemon_never_joined_is_unknown(ctx: DaemonContext) -> None:
    with pytest.raises(UnknownMesh) as caught:
        parse(ctx, mesh="elsewhere")
    assert caught.value.fields == {"mesh": "elsewhere"}


@pytest.mark.parametrize("order", ["ASC", "newest", ""])
def test_order_is_asc_or_desc(ctx: DaemonContext, order: str) -> None:
    assert refused(ctx, order=order) == "order must be asc or desc"


@pytest.mark.parametrize(("since", "detail"), [
    ("yesterday", "since must be an ISO 8601 time"),
    ("2026-11-26T15:00:00", "since needs a time zone"),
])
def test_since_must_be_a_zoned_iso_time(ctx: DaemonContext, since: str, detail: str) -> None:
    assert refused(ctx, since=since).startswith(detail)


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_limit_bounds_are_inclusive(ctx: DaemonContext, limit: str) -> None:
    assert parse(ctx, limit=limit).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "1e3", " 5", "²", "٣", ""])
def test_limit_is_ascii_digits_from_1_to_1000(ctx: DaemonContext, limit: str) -> None:
    assert refused(ctx, limit=limit) == "limit must be an integer from 1 to 1000"


def test_cursor_is_a_seq_up_to_2_to_the_62(ctx: DaemonContext) -> None:
    assert parse(ctx, cursor="0").cursor == 0
    assert parse(ctx, cursor=str(2**62)).cursor == 2**62
    assert refused(ctx, cursor=str(2**62 + 1)) == (
        f"cursor must be an integer from 0 to {2**62}")
    assert refused(ctx, cursor="abc").startswith("cursor must be")
