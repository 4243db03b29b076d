"""What every command shares: the ``--json`` flag, the paths, and the SDK's client."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from claudemesh.cli.output import PRINTER
from claudemesh.config import Paths, paths_from_env
from claudemesh.sdk.client import Client

__all__ = ["client", "current_paths", "json_option"]

F = TypeVar("F", bound=Callable[..., Any])


def _set_json(_: click.Context, __: click.Parameter, value: bool) -> None:
    PRINTER.json = value


def json_option(fn: F) -> F:
    """``--json``: machine-readable output, errors included."""
    return click.option("--json", "json_output", is_flag=True, expose_value=False,
                        is_eager=True, callback=_set_json,
                        help="Print JSON instead of text.")(fn)


def current_paths() -> Paths:
    """The CLI edge is where the environment is read (STYLE (b)9)."""
    return paths_from_env(os.environ)


def client(paths: Paths, *, timeout: float = 5.0) -> Client:
    """The SDK's client over the Unix socket: the CLI has no client of its own."""
    return Client(paths, timeout=timeout)
