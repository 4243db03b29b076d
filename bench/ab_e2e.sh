#!/usr/bin/env bash
# A/B of bench/e2e.py scenario 2 (delivered/s) between a git ref and the working tree.
# The machine's speed drifts, so the two sides run in alternation and the ratio of the
# medians is the figure to quote. Usage: bench/ab_e2e.sh <base-ref> [rounds] [messages]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: bench/ab_e2e.sh <base-ref> [rounds] [messages]}
rounds=${2:-3}
messages=${3:-20000}
base=$(mktemp -d /tmp/claudemesh-ab.XXXXXX)
trap 'git worktree remove --force "$base/tree" >/dev/null 2>&1 || true; rm -rf "$base"' EXIT
git worktree add --detach "$base/tree" "$ref" >/dev/null
python3 -m venv "$base/venv"
"$base/venv/bin/pip" install --quiet -e "$base/tree" >/dev/null
run() {  # run <python> <tree>: prints delivered/s
  (cd "$2" && "$1" bench/e2e.py --sequential 100 --messages "$messages" --backlog 100 2>&1 |
    sed -n 's/^  delivered: \([0-9,]*\)\/s.*/\1/p' | head -1 | tr -d ,)
}
base_runs=(); new_runs=()
for i in $(seq 1 "$rounds"); do
  b=$(run "$base/venv/bin/python" "$base/tree"); n=$(run .venv/bin/python .)
  echo "round $i: base $b/s, new $n/s"
  base_runs+=("$b"); new_runs+=("$n")
done
python3 - "${base_runs[*]}" "${new_runs[*]}" <<'PY'
import statistics, sys
base, new = ([float(x) for x in arg.split()] for arg in sys.argv[1:3])
mb, mn = statistics.median(base), statistics.median(new)
print(f"median: base {mb:,.0f}/s, new {mn:,.0f}/s, ratio {mn / mb:.2f}")
PY
