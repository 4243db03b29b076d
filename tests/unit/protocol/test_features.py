"""Feature validation (R-NEG-1..5): every failure kind, and optional params falling back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from claudemesh.protocol.features import (
    MEMBER_SESSIONS,
    OPTIONAL_FEATURES,
    BatchParams,
    FailureKind,
    Negotiated,
    NegotiationFailure,
    build_feature_map,
    validate_features,
)


def with_change(path: list[str], value: Any) -> dict[str, Any]:
    features = copy.deepcopy(build_feature_map())
    node: Any = features
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return features


def test_the_default_map_negotiates() -> None:
    result = validate_features(build_feature_map())
    assert isinstance(result, Negotiated)
    assert (result.dedupe.mode, result.dedupe.retention_days) == ("retention_scoped", 365)
    assert (result.connection_policy, result.inline_bytes, result.warnings) == (
        "prefer_newest", 65536, ())
    assert result.batch == BatchParams(max_frames=256, max_bytes=131072)


def test_a_map_without_frame_batch_means_single_frames() -> None:
    result = validate_features(build_feature_map(batch=None))
    assert isinstance(result, Negotiated)
    assert (result.batch, result.warnings) == (None, ())


def test_permanent_mode_has_no_retention_days() -> None:
    result = validate_features(build_feature_map(dedupe_mode="permanent"))
    assert isinstance(result, Negotiated) and result.dedupe.retention_days is None


DEDUPE = ["client_message_id_dedupe", "params"]


@pytest.mark.parametrize(("change", "kind", "feature"), [
    (([*DEDUPE[:1]], KeyError), FailureKind.UNAVAILABLE, "client_message_id_dedupe"),
    ((["concurrent_connection_policy"], KeyError), FailureKind.UNAVAILABLE,
     "concurrent_connection_policy"),
    (([*DEDUPE, "request_fingerprint"], False), FailureKind.UNAVAILABLE,
     "client_message_id_dedupe"),
    (([*DEDUPE, "request_fingerprint"], KeyError), FailureKind.UNAVAILABLE,
     "client_message_id_dedupe"),
    (([*DEDUPE, "version"], 2), FailureKind.PARAM_INVALID, "client_message_id_dedupe"),
    (([*DEDUPE, "mode"], "forever"), FailureKind.PARAM_INVALID, "client_message_id_dedupe"),
    (([*DEDUPE, "dedupe_retention_days"], KeyError), FailureKind.PARAM_INVALID,
     "client_message_id_dedupe"),
    (([*DEDUPE, "dedupe_retention_days"], "365"), FailureKind.PARAM_INVALID,
     "client_message_id_dedupe"),
    (([*DEDUPE, "dedupe_retention_days"], True), FailureKind.PARAM_INVALID,
     "client_message_id_dedupe"),
    (([*DEDUPE, "dedupe_retention_days"], -5), FailureKind.BELOW_FLOOR,
     "client_message_id_dedupe"),
    (([*DEDUPE, "dedupe_retention_days"], 2), FailureKind.BELOW_FLOOR,
     "client_message_id_dedupe"),
    ((["client_message_id_dedupe"], {"no": "params"}), FailureKind.PARAM_INVALID,
     "client_message_id_dedupe"),
    ((["concurrent_connection_policy", "params", "version"], 9), FailureKind.PARAM_INVALID,
     "concurrent_connection_policy"),
])
def test_required_features_fail_loudly(change: tuple[list[str], Any], kind: FailureKind,
                                       feature: str) -> None:
    result = validate_features(with_change(*change))
    assert isinstance(result, NegotiationFailure)
    assert (result.kind, result.feature) == (kind, feature)
    assert result.close_reason() == {"kind": str(kind), "feature": feature,
                                     "detail": result.detail}


def test_three_days_is_exactly_enough() -> None:
    assert isinstance(validate_features(with_change([*DEDUPE, "dedupe_retention_days"], 3)),
                      Negotiated)


@pytest.mark.parametrize("change", [
    (["max_payload", "params", "inline_bytes"], 0),
    (["max_payload", "params", "blob_bytes"], KeyError),
    (["max_payload", "params", "version"], 7),
    (["concurrent_connection_policy", "params", "default_policy"], "chaos"),
    ([*DEDUPE, "tombstone_history_pruned_window_days"], -1),
    (["frame_batch", "params", "version"], 2),
    (["frame_batch", "params", "max_frames"], 1),
    (["frame_batch", "params", "max_frames"], True),
    (["frame_batch", "params", "max_bytes"], 4095),
    (["frame_batch", "params", "max_bytes"], KeyError),
    (["frame_batch"], {"params": None}),
])
def test_optional_params_fall_back_with_a_warning(change: tuple[list[str], Any]) -> None:
    result = validate_features(with_change(*change))
    assert isinstance(result, Negotiated)
    assert len(result.warnings) == 1
    if change[0][0] == "frame_batch":
        assert result.batch is None and "frame_batch ignored" in result.warnings[0]


def test_the_smallest_batch_params_are_taken() -> None:
    result = validate_features(with_change(["frame_batch", "params"], {
        "version": 1, "max_frames": 2, "max_bytes": 4096}))
    assert isinstance(result, Negotiated) and result.batch == BatchParams(2, 4096)


def test_member_sessions_is_advertised_and_optional() -> None:
    features = build_feature_map()
    assert features[MEMBER_SESSIONS] == {"params": {"version": 1, "max_sessions": 32}}
    assert MEMBER_SESSIONS in OPTIONAL_FEATURES
    result = validate_features(features)
    assert isinstance(result, Negotiated)
    assert (result.max_sessions, result.warnings) == (32, ())
    assert MEMBER_SESSIONS in result.features


@pytest.mark.parametrize("features", [
    build_feature_map(omit=frozenset({MEMBER_SESSIONS})),
    build_feature_map(max_sessions=None),
])
def test_a_map_without_member_sessions_negotiates_without_it(features: dict[str, Any]) -> None:
    assert MEMBER_SESSIONS not in features
    result = validate_features(features)
    assert isinstance(result, Negotiated)
    assert (result.max_sessions, result.warnings) == (None, ())
    assert result.batch == BatchParams(max_frames=256, max_bytes=131072)


@pytest.mark.parametrize("change", [
    ([MEMBER_SESSIONS, "params", "version"], 2),
    ([MEMBER_SESSIONS, "params", "max_sessions"], 0),
    ([MEMBER_SESSIONS, "params", "max_sessions"], -3),
    ([MEMBER_SESSIONS, "params", "max_sessions"], True),
    ([MEMBER_SESSIONS, "params", "max_sessions"], "32"),
    ([MEMBER_SESSIONS, "params", "max_sessions"], 32.0),
    ([MEMBER_SESSIONS, "params", "max_sessions"], KeyError),
    ([MEMBER_SESSIONS], {"params": None}),
    ([MEMBER_SESSIONS], "yes"),
])
def test_bad_member_sessions_params_are_a_warning_never_a_failure(
        change: tuple[list[str], Any]) -> None:
    result = validate_features(with_change(*change))
    assert isinstance(result, Negotiated)
    assert result.max_sessions is None
    assert len(result.warnings) == 1 and "member_sessions ignored" in result.warnings[0]
    assert result.batch == BatchParams(max_frames=256, max_bytes=131072)


def test_any_positive_max_sessions_is_taken() -> None:
    for limit in (1, 32, 1000):
        result = validate_features(build_feature_map(max_sessions=limit))
        assert isinstance(result, Negotiated) and result.max_sessions == limit


def test_no_map_at_all_is_unavailable() -> None:
    assert isinstance(validate_features(None), NegotiationFailure)
    assert isinstance(validate_features(["client_message_id_dedupe"]), NegotiationFailure)
