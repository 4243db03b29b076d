"""``claudemesh completion bash|zsh|fish``: print the shell completion script."""

from __future__ import annotations

import sys

import click

__all__ = ["completion"]


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print the shell completion script, e.g. `eval "$(claudemesh completion bash)"`."""
    from click.shell_completion import get_completion_class  # noqa: PLC0415

    from claudemesh.cli.main import cli  # noqa: PLC0415

    cls = get_completion_class(shell)
    assert cls is not None
    sys.stdout.write(cls(cli, {}, "claudemesh", "_CLAUDEMESH_COMPLETE").source() + "\n")
    return 0
