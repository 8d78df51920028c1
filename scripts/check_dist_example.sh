#!/usr/bin/env bash
# Checks an example's --dist mode against one process: the same run as one plain process and
# as 2 ranks under mpirun must print the same final metric (within TOL), and the job must print
# it exactly once (only rank 0 prints). Used by CTest (examples/*/CMakeLists.txt).
#   check_dist_example.sh MPIRUN PATTERN TOL -- PROGRAM [ARGS...]
# PATTERN is an extended regex whose first number on the matching line is the metric
# (e.g. "^final test accuracy:").
set -euo pipefail
[[ $# -ge 5 && $4 == "--" ]] || { echo "usage: $0 MPIRUN PATTERN TOL -- PROGRAM [ARGS...]" >&2; exit 2; }
mpirun=$1 pattern=$2 tol=$3
shift 4
metric() { grep -E "$pattern" | head -n 1 | grep -oE '[0-9]+(\.[0-9]+)?' | head -n 1; }

one=$("$@" 2>&1) || { echo "$one"; echo "FAILED: the one-process run failed"; exit 1; }
two=$("$mpirun" --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS=detect_leaks=0 \
      "$@" --dist 2>&1) || { echo "$two"; echo "FAILED: the 2-rank run failed"; exit 1; }
echo "--- 2 ranks:"; echo "$two"
a=$(metric <<<"$one"); b=$(metric <<<"$two")
lines=$(grep -cE "$pattern" <<<"$two" || true)
[[ -n $a && -n $b ]] || { echo "FAILED: no line matching /$pattern/ (one process: '$a', 2 ranks: '$b')"; exit 1; }
[[ $lines == 1 ]] || { echo "FAILED: the 2-rank job printed the final line $lines times (only rank 0 should)"; exit 1; }
if awk -v a="$a" -v b="$b" -v t="$tol" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; then
  echo "ok: one process $a, 2 ranks $b (tolerance $tol)"
else
  echo "FAILED: one process $a, 2 ranks $b differ by more than $tol"; exit 1
fi
