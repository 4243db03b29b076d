"""A/B of a benchmark script: a base git ref against this checkout, run in alternation.

This shared machine's speed drifts by tens of percent within an hour, so two runs minutes
apart cannot show a 10 % change. This script checks the base ref out into a temporary
worktree (``git worktree add --detach``) and then runs, ``--rounds`` times, the base's own
``bench/<script>.py`` and this checkout's, one right after the other (base, current, base,
current, ...). Each side runs with ``PYTHONPATH=<its tree>/src`` on the same interpreter,
so the base's script measures the base's source and the current script the current
source; the processes under test are started through the ``claudemesh`` console script
beside the interpreter, which imports whichever ``src`` is on ``PYTHONPATH``. Every run
is a short one (``QUICK`` below, or the arguments after ``--``) with ``--json``; the
headline figures are read from that JSON. It prints each run's figures, then per figure
the median of each side and the ratio current / base. Above 1 is faster for a rate and
slower for a latency; the reference loop (e2e only) says whether the machine itself
changed speed between the sides.

Run::

    .venv/bin/python bench/ab.py e2e 24ea168                  # 3 rounds, QUICK["e2e"]
    .venv/bin/python bench/ab.py broker 24ea168 --rounds 5
    .venv/bin/python bench/ab.py e2e HEAD~1 -- --sequential 100 --messages 20000 --backlog 100
    .venv/bin/python bench/ab.py e2e --with=--tls     # this checkout, without then with a flag

With ``--with FLAG`` there is no base ref: both sides are this checkout, the base side
runs the script as given and the current side with FLAG added (``--tls``: the same runs
over wss:// instead of ws://, issue 14).

The worktree is removed at the end. Exit status 1 when a run failed or reported a
mismatch (its figures are still shown, marked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.stats import median

REPO: Final = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S: Final = 900.0

# Short runs: one A/B of 3 rounds (6 runs) takes 2 to 3 minutes on the 2-core machine.
QUICK: Final[dict[str, tuple[str, ...]]] = {
    "e2e": ("--sequential", "300", "--messages", "10000", "--backlog", "3000"),
    "broker": ("--runs", "2", "--sends", "10000", "--idle", "200", "--receivers", "30",
               "--messages", "300"),
}

# The headline figures of each script: label -> path into its --json object.
FIGURES: Final[dict[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "e2e": (
        ("delivered/s (s2)", ("throughput", "delivered_per_s")),
        ("accepts/s (s2)", ("throughput", "accepts_per_s")),
        ("p50 ms (s1)", ("latency", "end_to_end", "p50_ms")),
        ("p99 ms (s1)", ("latency", "end_to_end", "p99_ms")),
        ("drain/s (s3)", ("backlog_drain", "delivered_per_s_first_to_last")),
        ("ref loop us", ("throughput", "reference_us", "0")),
    ),
    "broker": (
        ("accepts/s (A)", ("median_accepts_per_s",)),
        ("accept p99 ms (A)", ("median_p99_ms",)),
        ("deliveries/s (B)", ("fanout", "deliveries_per_s")),
        ("push p99 ms (B)", ("fanout", "p99_ms")),
        ("KB/idle conn", ("idle", "kb_per_connection")),
    ),
}


def dig(doc: Any, path: tuple[str, ...]) -> float | None:
    """The number at ``path`` (a list index is a digit string), None if absent."""
    for key in path:
        if isinstance(doc, list) and key.isdigit() and int(key) < len(doc):
            doc = doc[int(key)]
        elif isinstance(doc, dict) and key in doc:
            doc = doc[key]
        else:
            return None
    return float(doc) if isinstance(doc, int | float) else None


@dataclass(slots=True)
class Side:
    """One side of the A/B: a tree whose ``bench/<script>.py`` and ``src`` are run."""

    name: str
    tree: Path
    extra: tuple[str, ...] = ()  # arguments only this side's runs get (--with)
    runs: list[dict[str, float | None]] = field(default_factory=list)
    failures: int = 0


def run_once(side: Side, script: str, args: list[str], python: str, logs: Path,
             n: int) -> tuple[dict[str, float | None], str]:
    """One run of ``side``'s script; its figures and a note ('' when it went well)."""
    log = logs / f"{side.name}-{n}.log"
    env = {**os.environ, "PYTHONPATH": str(side.tree / "src")}
    try:
        with log.open("w") as err:
            done = subprocess.run([python, f"bench/{script}.py", "--json", *args, *side.extra],
                                  cwd=side.tree, env=env, stdout=subprocess.PIPE, stderr=err,
                                  text=True, timeout=RUN_TIMEOUT_S, check=False)
        doc = json.loads(done.stdout) if done.stdout.strip() else None
        code = done.returncode
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        doc, code = None, -1
        with log.open("a") as err:
            err.write(f"\nab.py: {type(exc).__name__}: {exc}\n")
    figures = {label: dig(doc, path) for label, path in FIGURES[script]}
    if doc is None:
        tail = log.read_text(errors="replace")[-1500:]
        return figures, f"FAILED (exit {code}), no figures; log tail:\n{tail}"
    return figures, "" if code == 0 else f"exit {code}: a mismatch, see the script's output"


def source_of(side: Side, python: str) -> str:
    """Where ``side``'s runs import claudemesh from (it must be its own ``src``)."""
    env = {**os.environ, "PYTHONPATH": str(side.tree / "src")}
    done = subprocess.run([python, "-c", "import claudemesh; print(claudemesh.__file__)"],
                          cwd=side.tree, env=env, capture_output=True, text=True, check=False)
    found = Path(done.stdout.strip()).parent if done.returncode == 0 else None
    if found != side.tree / "src" / "claudemesh":
        raise SystemExit(f"{side.name}: claudemesh imports from {found}, not {side.tree}/src")
    return str(found)


def number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def print_run(side: Side, n: int, figures: dict[str, float | None], note: str) -> None:
    shown = "  ".join(f"{label} {number(v)}" for label, v in figures.items())
    print(f"round {n} {side.name:<7} {shown}" + (f"  [{note}]" if note else ""), flush=True)


def print_summary(script: str, base: Side, current: Side) -> None:
    print(f"\n{'figure':<20}{'base median':>14}{'current median':>16}{'current/base':>14}")
    for label, _ in FIGURES[script]:
        values = [[v for r in s.runs if (v := r[label]) is not None] for s in (base, current)]
        b, c = (median(v) if v else None for v in values)
        ratio = f"{c / b:.2f}" if b and c is not None else "n/a"
        print(f"{label:<20}{number(b):>14}{number(c):>16}{ratio:>14}"
              f"   (runs: {len(values[0])} base, {len(values[1])} current)")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the script's arguments (what follows ``--``)."""
    argv = sys.argv[1:] if argv is None else argv
    ours, script_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if (
        "--" in argv) else (argv, [])
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        usage="%(prog)s [--rounds N] [--python PY] {broker,e2e} base [-- script args]")
    parser.add_argument("script", choices=sorted(FIGURES), help="bench/<script>.py to A/B")
    parser.add_argument("base", nargs="?", help="the git ref to compare against (checked out"
                        " apart); not with --with")
    parser.add_argument("--with", dest="flag", metavar="FLAG",
                        help="A/B this checkout without and with FLAG instead of a base ref")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side, alternated")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for both sides (its venv has the dependencies and"
                             " the claudemesh console script); default: this one")
    args = parser.parse_args(ours)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if (args.base is None) == (args.flag is None):
        parser.error("give a base ref, or --with FLAG")
    return args, script_args or list(QUICK[args.script])


def main(argv: list[str] | None = None) -> int:
    args, script_args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="claudemesh-ab.", dir="/tmp"))
    base_tree = REPO if args.flag else work / "tree"
    base, current = Side("base", base_tree), Side("current", REPO)
    if args.flag:
        current.extra = (args.flag,)
    else:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                        str(base_tree), args.base], check=True)
    try:
        commit = subprocess.run(["git", "-C", str(base_tree), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        what = (f"without and with {args.flag}" if args.flag else
                f"base {args.base} ({commit}) against {REPO}")
        print(f"A/B bench/{args.script}.py: {what},"
              f" {args.rounds} round(s), base first; python {args.python}\n"
              f"claudemesh from: base {source_of(base, args.python)},"
              f" current {source_of(current, args.python)}\n"
              f"script arguments: {' '.join(script_args)}", flush=True)
        for n in range(1, args.rounds + 1):
            for side in (base, current):
                figures, note = run_once(side, args.script, script_args, args.python, work, n)
                side.runs.append(figures)
                side.failures += bool(note)
                print_run(side, n, figures, note)
        print_summary(args.script, base, current)
    finally:
        if not args.flag:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(base_tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if base.failures or current.failures else 0


if __name__ == "__main__":
    sys.exit(main())
