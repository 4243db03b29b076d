"""What every command shares: the ``--json`` flag, the paths, and the SDK's client."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from claudemesh.cli.output import PRINTER
from claudemesh.config import Paths, paths_from_env
from claudemesh.errors import ExitCode
from claudemesh.sdk.client import Client

if TYPE_CHECKING:
    from claudemesh.daemon.service import InstallReport

__all__ = ["client", "current_paths", "json_option", "service_report"]

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


def service_report(report: InstallReport, *, show_unit: bool = False) -> int:
    """Print an install or uninstall report (the daemon's or the broker's service); with
    ``show_unit`` (a dry run) the unit file comes first. The exit status."""
    text = [report.summary, *report.warnings, *report.errors]
    if show_unit:
        text = [f"# {report.path}", report.content, *text]
    PRINTER.result(report.to_dict(), "\n".join(text))
    return 0 if report.ok else ExitCode.FAILURE
