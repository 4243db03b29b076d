"""JSON-lines logging through structlog's stdlib bridge.

Modules log with the stdlib (``logging.getLogger(__name__)``, fields in ``extra=``), so
aiohttp's and our own lines come out the same: one JSON object per line with ``ts``,
``level``, ``logger``, ``event`` and the extras. Secrets (tokens, keys, bodies) are never
passed to a logger in the first place; ``_redact`` is a second net for known field names.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final, TextIO

import structlog

__all__ = ["configure_logging"]

LOG_MAX_BYTES: Final = 10 * 1024 * 1024
LOG_BACKUPS: Final = 5
_SECRET_FIELDS: Final = frozenset({"token", "secret_key", "authorization", "message", "body"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SECRET_FIELDS & event.keys():
        event[key] = "***"
    return event


def configure_logging(*, level: str = "INFO", stream: TextIO | None = None,
                      file: Path | None = None) -> None:
    """Send every log line, as JSON, to ``file`` (rotated) or else ``stream`` (stderr)."""
    pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _redact,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler: logging.Handler
    if file is not None:
        handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection
    structlog.configure(
        processors=[*pre_chain[:2], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
