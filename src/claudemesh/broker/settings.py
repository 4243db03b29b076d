"""The broker's tunables, with units in their names (STYLE (b)9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_PORT", "BrokerSettings"]

DEFAULT_PORT: Final = 7900


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    frame_soft_limit_bytes: int = 256 * 1024  # larger: an error frame, connection kept
    frame_hard_limit_bytes: int = 1024 * 1024  # larger: close 1009 (websockets)
    inline_bytes: int = 65536  # max_payload.inline_bytes: body bytes per message
    hello_timeout_s: float = 10.0
    clock_skew_ms: int = 60_000  # hello timestamps outside ±60 s are refused
    ping_interval_s: float = 30.0  # heartbeats
    ping_timeout_s: float = 45.0  # ping + timeout = 75 s of silence before the cut
    close_timeout_s: float = 2.0  # a peer that stopped answering will not answer close
    presence_lease_s: float = 90.0  # peer_left only after this long without reconnect
    presence_sweep_s: float = 1.0  # how often leases are checked (at most lease / 4)
    heartbeat_interval_s: float = 2.0  # brokers sharing a store prove they are alive
    broker_dead_after_s: float = 10.0  # a silent broker's members count as leased
    delivery_lease_s: float = 30.0  # an unacked push is pushed again after this
    delivery_window: int = 256  # unacked pushes in flight per connection
    frames_in_flight: int = 256  # frames handled concurrently per connection
    rate_per_s: float = 1000.0  # per-member token bucket (B1)
    rate_burst: int = 2000
    sweep_interval_s: float = 60.0
    revocation_poll_s: float = 1.0
    omit_features: frozenset[str] = field(default_factory=frozenset)  # tests only
    tls_cert: str | None = None  # PEM certificate chain: serve wss:// (issue 14)
    tls_key: str | None = None  # its private key; both reload on SIGHUP
    max_file_bytes: int = 50 * 1024 * 1024  # a shared file's plaintext (max_payload.blob_bytes)
    blob_dir: str | None = None  # None: <db>.blobs (SQLite), config_dir/broker/blobs (PG)
