#!/usr/bin/env bash
# Fuzzes ember's file readers (tests/fuzz/fuzz_io.h) with libFuzzer, ASan and UBSan.
#
#   scripts/fuzz.sh --minutes N [--jobs J] [--build-only]
#
# Builds the libFuzzer target ember_fuzz_io with clang in build/fuzz (EMBER_FUZZ=ON,
# EMBER_SANITIZE=address,undefined; installs clang and libFuzzer with apt when missing and
# run as root), then runs it for N minutes with one worker: the seed corpus tests/fuzz/corpus
# is read, new inputs go to build/fuzz/corpus (not committed), crash reproducers to
# build/fuzz/crashes/. At the end it prints executions, coverage (cov, ft), corpus size and
# the crashes left for triage. Add a fixed crash's reproducer to tests/fuzz/corpus as
# known-<what> so CTest ember.fuzz_replay keeps replaying it.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
jobs=2
build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz.sh: installing clang and libFuzzer (apt-get install clang libclang-rt-dev)"
  if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q clang libclang-rt-dev libomp-dev
  else sudo apt-get update -q && sudo apt-get install -y -q clang libclang-rt-dev libomp-dev; fi
fi

build=build/fuzz
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DEMBER_FUZZ=ON -DEMBER_SANITIZE=address,undefined -DEMBER_CUDA=OFF -DEMBER_NATIVE=OFF \
  -DEMBER_BUILD_EXAMPLES=OFF -DEMBER_BUILD_BENCH=OFF >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" --target ember_fuzz_io -j "$jobs"
[ "$build_only" = 1 ] && exit 0

mkdir -p "$build/corpus" "$build/crashes"
before=$(find "$build/corpus" -type f | wc -l)
log="$build/fuzz-$(date +%Y%m%d-%H%M%S).log"
echo "fuzz.sh: running for $minutes minute(s); log $log"
set +e
# One worker; the limits keep a hostile input from taking the machine (rss in MB, time in s).
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$build/tests/fuzz/ember_fuzz_io" "$build/corpus" tests/fuzz/corpus \
  -dict=tests/fuzz/safetensors.dict -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=20 \
  -max_len=262144 -print_final_stats=1 -artifact_prefix="$build/crashes/" >"$log" 2>&1
rc=$?
set -e
after=$(find "$build/corpus" -type f | wc -l)
last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
echo "fuzz.sh: exit code $rc"
echo "fuzz.sh: last status: $last"
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
echo "fuzz.sh: corpus $before -> $after files in $build/corpus (plus the seeds in tests/fuzz/corpus)"
crashes=$(find "$build/crashes" -type f | wc -l)
echo "fuzz.sh: $crashes crash/leak/timeout file(s) in $build/crashes"
find "$build/crashes" -type f | head -20
exit $rc
