"""Feature negotiation (daemon-spec §15.1, §15.5; R-NEG-1..5): what a broker advertises, and
the pure validation a daemon applies to it.

A broker's map is ``{feature: {"params": {"version": 1, ...}}}``. Validation never quietly
degrades: a required feature that is missing, has an unknown version or mode, or has a
required parameter out of bounds makes the whole negotiation fail with one of three kinds
(close 4010). Optional parameters that are missing or invalid fall back to defaults and
are reported as warnings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_MAX_SESSIONS",
    "FRAME_BATCH",
    "MEMBER_SESSIONS",
    "OPTIONAL_FEATURES",
    "REQUIRED_FEATURES",
    "BatchParams",
    "DedupeParams",
    "FailureKind",
    "Negotiated",
    "NegotiationFailure",
    "build_feature_map",
    "validate_features",
]

REQUIRED_FEATURES: Final = ("client_message_id_dedupe", "concurrent_connection_policy")
FRAME_BATCH: Final = "frame_batch"
MEMBER_SESSIONS: Final = "member_sessions"
OPTIONAL_FEATURES: Final = ("max_payload", "key_epoch", "member_keypair_rotated_event",
                            FRAME_BATCH, MEMBER_SESSIONS)
DEFAULT_MAX_SESSIONS: Final = 32  # entries of set_profile.sessions a broker takes
MIN_DEDUPE_RETENTION_DAYS: Final = 3  # R-AGE-1: the daemon's hard floor
MIN_PAYLOAD_BYTES: Final = 1024
MIN_BATCH_BYTES: Final = 4096  # below this a batch would rarely hold two frames
DEDUPE_MODES: Final = ("retention_scoped", "permanent")
CONNECTION_POLICIES: Final = ("prefer_newest", "prefer_oldest", "allow_concurrent")


class FailureKind(enum.StrEnum):
    UNAVAILABLE = "feature_unavailable"
    PARAM_INVALID = "feature_param_invalid"
    BELOW_FLOOR = "feature_param_below_floor"


@dataclass(frozen=True, slots=True)
class NegotiationFailure:
    kind: FailureKind
    feature: str
    detail: str

    def close_reason(self) -> dict[str, str]:
        """The §15.5 ``close_reason`` object."""
        return {"kind": str(self.kind), "feature": self.feature, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DedupeParams:
    mode: str
    retention_days: int | None  # None in permanent mode
    tombstone_history_pruned_window_days: int | None


@dataclass(frozen=True, slots=True)
class BatchParams:
    """``frame_batch``: how many frames, and how many bytes of them, one ``batch`` holds."""

    max_frames: int
    max_bytes: int


DEFAULT_BATCH: Final = BatchParams(max_frames=256, max_bytes=128 * 1024)


@dataclass(frozen=True, slots=True)
class Negotiated:
    dedupe: DedupeParams
    connection_policy: str
    inline_bytes: int | None  # from max_payload, when advertised and valid
    features: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())
    batch: BatchParams | None = None  # from frame_batch, when advertised and valid
    max_sessions: int | None = None  # from member_sessions, when advertised and valid


def build_feature_map(*, dedupe_mode: str = "retention_scoped", retention_days: int = 365,
                      tombstone_days: int = 30, connection_policy: str = "prefer_newest",
                      inline_bytes: int = 65536, blob_bytes: int = 65536,
                      batch: BatchParams | None = DEFAULT_BATCH,
                      max_sessions: int | None = DEFAULT_MAX_SESSIONS,
                      omit: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """What a broker advertises in ``hello_ack.features`` (R-NEG-1)."""
    dedupe: dict[str, Any] = {"version": 1, "mode": dedupe_mode, "request_fingerprint": True,
                              "tombstone_history_pruned_window_days": tombstone_days}
    if dedupe_mode == "retention_scoped":
        dedupe["dedupe_retention_days"] = retention_days
    features = {
        "client_message_id_dedupe": {"params": dedupe},
        "concurrent_connection_policy": {"params": {"version": 1,
                                                    "default_policy": connection_policy}},
        "member_keypair_rotated_event": {"params": {"version": 1}},
        "key_epoch": {"params": {"version": 2, "max_concurrent_epochs": 0,
                                 "encrypted_topics": True}},
        "max_payload": {"params": {"version": 1, "inline_bytes": inline_bytes,
                                   "blob_bytes": blob_bytes}},
    }
    if batch is not None:
        features[FRAME_BATCH] = {"params": {"version": 1, "max_frames": batch.max_frames,
                                            "max_bytes": batch.max_bytes}}
    if max_sessions is not None:
        features[MEMBER_SESSIONS] = {"params": {"version": 1, "max_sessions": max_sessions}}
    return {name: value for name, value in features.items() if name not in omit}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _params(features: Mapping[str, Any], name: str) -> dict[str, Any] | NegotiationFailure:
    entry = features.get(name)
    if entry is None:
        return NegotiationFailure(FailureKind.UNAVAILABLE, name, "not advertised")
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping):
        return NegotiationFailure(FailureKind.PARAM_INVALID, name, "no params object")
    if params.get("version") != 1:
        return NegotiationFailure(FailureKind.PARAM_INVALID, name,
                                  f"unknown params.version {params.get('version')!r}")
    return dict(params)


def _dedupe(params: dict[str, Any], warnings: list[str]) -> DedupeParams | NegotiationFailure:
    name = "client_message_id_dedupe"
    if params.get("request_fingerprint") is not True:  # R-NEG-2: counts as missing
        return NegotiationFailure(FailureKind.UNAVAILABLE, name,
                                  "request_fingerprint is not enforced")
    mode = params.get("mode")
    if mode not in DEDUPE_MODES:
        return NegotiationFailure(FailureKind.PARAM_INVALID, name, f"unknown mode {mode!r}")
    days: int | None = None
    if mode == "retention_scoped":
        raw_days = params.get("dedupe_retention_days")
        if not isinstance(raw_days, int) or isinstance(raw_days, bool):
            return NegotiationFailure(FailureKind.PARAM_INVALID, name,
                                      "dedupe_retention_days must be an integer")
        days = raw_days
        if days < MIN_DEDUPE_RETENTION_DAYS:
            return NegotiationFailure(
                FailureKind.BELOW_FLOOR, name,
                f"dedupe_retention_days {days} is below the floor of {MIN_DEDUPE_RETENTION_DAYS}")
    tombstone = params.get("tombstone_history_pruned_window_days")
    if tombstone is not None and not (_is_int(tombstone) and tombstone >= 0):
        warnings.append(f"{name}.tombstone_history_pruned_window_days invalid; ignored")
        tombstone = None
    return DedupeParams(mode, days, tombstone)


def _inline_bytes(features: Mapping[str, Any], warnings: list[str]) -> int | None:
    if "max_payload" not in features:
        return None
    params = _params(features, "max_payload")
    if isinstance(params, NegotiationFailure):
        warnings.append(f"max_payload ignored: {params.detail}")
        return None
    inline, blob = params.get("inline_bytes"), params.get("blob_bytes")
    if not (_is_int(inline) and _is_int(blob) and min(inline, blob) >= MIN_PAYLOAD_BYTES):
        warnings.append("max_payload ignored: inline_bytes/blob_bytes missing or below 1024")
        return None
    return inline


def _batch(features: Mapping[str, Any], warnings: list[str]) -> BatchParams | None:
    if FRAME_BATCH not in features:
        return None
    params = _params(features, FRAME_BATCH)
    if isinstance(params, NegotiationFailure):
        warnings.append(f"{FRAME_BATCH} ignored: {params.detail}")
        return None
    frames, size = params.get("max_frames"), params.get("max_bytes")
    if not (_is_int(frames) and _is_int(size) and frames >= 2 and size >= MIN_BATCH_BYTES):
        warnings.append(f"{FRAME_BATCH} ignored: max_frames/max_bytes missing or below"
                        f" 2/{MIN_BATCH_BYTES}")
        return None
    return BatchParams(frames, size)


def _max_sessions(features: Mapping[str, Any], warnings: list[str]) -> int | None:
    """``member_sessions``: without it (or with bad params) the daemon publishes none."""
    if MEMBER_SESSIONS not in features:
        return None
    params = _params(features, MEMBER_SESSIONS)
    if isinstance(params, NegotiationFailure):
        warnings.append(f"{MEMBER_SESSIONS} ignored: {params.detail}")
        return None
    limit = params.get("max_sessions")
    if not (_is_int(limit) and limit >= 1):
        warnings.append(f"{MEMBER_SESSIONS} ignored: max_sessions missing or below 1")
        return None
    return limit


def validate_features(features: Any) -> Negotiated | NegotiationFailure:
    """Check a broker's feature map against R-NEG-1..4; pure."""
    if not isinstance(features, Mapping):
        return NegotiationFailure(FailureKind.UNAVAILABLE, REQUIRED_FEATURES[0],
                                  "the broker advertised no feature map")
    warnings: list[str] = []
    dedupe_params = _params(features, "client_message_id_dedupe")
    if isinstance(dedupe_params, NegotiationFailure):
        return dedupe_params
    dedupe = _dedupe(dedupe_params, warnings)
    if isinstance(dedupe, NegotiationFailure):
        return dedupe
    policy_params = _params(features, "concurrent_connection_policy")
    if isinstance(policy_params, NegotiationFailure):
        return policy_params
    policy = policy_params.get("default_policy", "prefer_newest")
    if policy not in CONNECTION_POLICIES:
        warnings.append(f"concurrent_connection_policy.default_policy {policy!r} unknown;"
                        " assuming prefer_newest")
        policy = "prefer_newest"
    inline_bytes, batch = _inline_bytes(features, warnings), _batch(features, warnings)
    max_sessions = _max_sessions(features, warnings)
    return Negotiated(dedupe=dedupe, connection_policy=policy, inline_bytes=inline_bytes,
                      features=tuple(sorted(features)), warnings=tuple(warnings), batch=batch,
                      max_sessions=max_sessions)
