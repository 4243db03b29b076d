"""Every error class has a code, a status and an exit code; codes are unique; the wire
form round-trips to the same class (STYLE (b)6, (b)18)."""

from __future__ import annotations

import pytest

from claudemesh import errors
from claudemesh.errors import (
    ClaudemeshError,
    IdempotencyKeyReused,
    LocalError,
    RemoteError,
    RequestError,
    ServiceError,
    error_classes,
    error_from_wire,
)


def concrete_classes() -> list[type[ClaudemeshError]]:
    return [getattr(errors, name) for name in errors.__all__
            if isinstance(getattr(errors, name), type)
            and issubclass(getattr(errors, name), ClaudemeshError)
            and "code" in getattr(errors, name).__dict__
            and getattr(errors, name) is not ClaudemeshError]


def test_every_exported_error_class_declares_its_own_code() -> None:
    bases = {ClaudemeshError, RequestError, ServiceError, LocalError, errors.AuthFailed}
    exported = {getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)
                and issubclass(getattr(errors, n), ClaudemeshError)}
    assert exported - bases == set(concrete_classes())


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in concrete_classes()]
    assert len(codes) == len(set(codes))
    assert set(codes) <= set(error_classes())


def test_request_errors_are_4xx_and_service_errors_5xx() -> None:
    for cls in concrete_classes():
        if issubclass(cls, RequestError):
            assert 400 <= cls.http_status < 500, cls
        elif issubclass(cls, ServiceError):
            assert 500 <= cls.http_status < 600, cls
        assert cls.exit_code in set(errors.ExitCode), cls


def test_exit_codes_follow_design_section_4() -> None:
    assert errors.DaemonUnreachable.exit_code == 3
    assert errors.IdempotencyKeyReused.exit_code == 5
    assert errors.ClientMessageIdInUse.exit_code == 5
    assert errors.ConfigError.exit_code == 2
    assert errors.InvalidRequest.exit_code == 2


@pytest.mark.parametrize("cls", [c for c in concrete_classes()
                                 if issubclass(c, (RequestError, ServiceError))])
def test_wire_round_trip(cls: type[ClaudemeshError]) -> None:
    original = cls("some detail", extra="x")
    rebuilt = error_from_wire(cls.http_status, original.to_wire())
    assert type(rebuilt) is cls
    assert rebuilt.detail == "some detail"
    assert rebuilt.fields == {"extra": "x"}


def test_conflict_fields_survive_the_wire() -> None:
    body = IdempotencyKeyReused("taken", conflict="outbox_dead_fingerprint_match",
                                daemon_fingerprint_prefix="00" * 8).to_wire()
    rebuilt = error_from_wire(409, body)
    assert isinstance(rebuilt, IdempotencyKeyReused)
    assert rebuilt.conflict == "outbox_dead_fingerprint_match"


@pytest.mark.parametrize("body", [None, "text", {"detail": "x"}, {"error": 5}])
def test_unexpected_bodies_become_remote_errors(body: object) -> None:
    assert isinstance(error_from_wire(502, body), RemoteError)


def test_unknown_codes_keep_status_and_code() -> None:
    err = error_from_wire(418, {"error": "teapot", "detail": "short and stout"})
    assert isinstance(err, RemoteError)
    assert err.fields["status"] == 418 and err.fields["error"] == "teapot"
