#!/usr/bin/env bash
# The test command (also what CI runs, via .ci/run):
#   1. scripts/setup.sh (installs missing Debian packages) and scripts/fetch_data.sh (the
#      examples' real data from Debian packages, into .cache/data, for their smoke tests)
#   2. the `release` preset: configure, build, ctest
#   3. the `asan` preset (AddressSanitizer + UBSan): configure, build, ctest
#      (skipped when EMBER_SKIP_ASAN=1)
# Any failure stops the script with a non-zero status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
step() { echo; echo "=== $* ($((SECONDS - start))s)"; }

step "setup"
bash scripts/setup.sh
bash scripts/fetch_data.sh emboss-test r-bioc-rcpi infernal r-cran-seqinr transdecoder python-matplotlib-data wordnet-base trans-de-en dict-gcide

for preset in release asan; do
  if [[ "$preset" == asan && "${EMBER_SKIP_ASAN:-0}" == 1 ]]; then
    echo; echo "=== asan skipped (EMBER_SKIP_ASAN=1)"
    continue
  fi
  step "$preset: configure"
  cmake --preset "$preset"
  step "$preset: build"
  cmake --build --preset "$preset"
  step "$preset: test"
  ctest --preset "$preset"
done

if command -v ccache >/dev/null; then ccache --show-stats 2>/dev/null | grep -Ei 'hits|misses' || true; fi
echo; echo "=== all tests passed ($((SECONDS - start))s)"
