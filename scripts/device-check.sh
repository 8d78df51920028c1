#!/usr/bin/env bash
# Builds ember with the CUDA backend on a GPU machine, runs everything that needs the GPU and
# writes the results: docs/perf/gpu-<device>.md and .json (scripts/gpu_report.py; the next run
# on that device overwrites them), the console log and the raw logs. Exits non-zero when the
# build, a test, memcheck, an example or a bench binary failed, or when no GPU was visible.
#
#   HERE, on a developer machine (no GPU needed), right before the device call:
#     bash scripts/device-check.sh --prepare [--with-data]
#   copies what the build needs and the device image lacks (Eigen, doctest, zlib, Google
#   Benchmark 1.7 headers and library) into .deps/ (a prefix with relocatable CMake package
#   files), records the commit and a checksum of the tracked files in .deps/COMMIT (the device
#   gets the working tree without this .git) and adds /.deps/ to .git/info/exclude.
#   --with-data also copies Fashion-MNIST (30 MB) to .deps/fashion-mnist and the KJV SWORD
#   module (3 MB) to .deps/kjv for the examples. Carry .deps with the call.
#
#   THERE, on the GPU machine, from the repository root, in one call of at most 10 minutes:
#     bash scripts/device-check.sh --quick
#   Steps, each under its own timeout and all under DEADLINE (default 520 s from the start; a
#   step that no longer fits is skipped, and the summary says so):
#     build     configure build/device (Release, EMBER_CUDA=ON, archs 90, Ninja, .deps and the
#               cuDNN of PyTorch's wheel), then only the targets run below, `ninja -k 0` (300 s)
#     tests     the whole ember_tests binary, every suite, EMBER_TEST_DEVICE=cuda (180 s); then
#               ember_dist_tests as one process: NCCL with a world of 1 (60 s)
#     bench     ember-gpu-bench, ember-conv-gpu-bench, ember-lstm_gpu_bench,
#               ember-attention_gpu_bench, ember-softmax_gpu_bench with
#               --benchmark_min_time=0.05 and JSON output (90 s each), then PyTorch's SDPA peer
#               python3 bench/g4_sdpa_torch.py (90 s); then G6/G7 end to end: ember-g6g7_bench
#               (150 s), python3 bench/g7_lstm_torch.py (120 s) and bench/g6_gpt_torch.py (eager and
#               torch.compile, 180 s), their JSON lines in e2e.txt
#     example   fashion_mnist 2 epochs (60 s); char_lm --model lstm, then transformer, 250 steps
#               or 1 minute each (--quick: 30 s; 150 s each), then the transformer with --cuda-graph
#               (150 s). After the benches: their figures matter more when time runs out
#     memcheck  compute-sanitizer memcheck over the cuda* suites, then over the other suites,
#               EMBER_TEST_DEVICE=cuda, without the deliberate out-of-memory case
#               "an absurd allocation ..." (-tce), whose cudaMalloc failures memcheck would count
#               as errors; leak checking off (the caching allocator keeps its blocks) (180 s each)
#   Without --quick: every target, `ctest`, Google Benchmark's default minimum time, ember-bench
#   too, and no practical deadline (DEADLINE 3000). --steps LIST picks steps (build, ctest,
#   tests, memcheck, example, bench; `cuda` = tests); --skip-build, --no-ctest, --no-sanitizer,
#   --no-example, --no-bench drop one.
#
#   Results: docs/perf/gpu-<device>.{md,json} (device from nvidia-smi: "NVIDIA H200" -> gpu-h200)
#   and the raw logs in build/device-check-logs/. With OUT set (the lent machine returns only
#   $OUT): $OUT/device-check.txt (this console), $OUT/gpu-<device>.md, .json and
#   $OUT/device-check-logs.tar.gz. Without a GPU the GPU steps are skipped with a line that says
#   so and the report goes to build/device-check-logs/ only.
#
#   Options: --deadline S (or DEADLINE=S), --build-dir DIR (build/device), --jobs N (16),
#   --archs LIST ($EMBER_CUDA_ARCHS or 90), --min-time X (Google Benchmark's minimum time per
#   case, a plain number of seconds: --quick 0.05), --bench-timeout S and --sanitizer-timeout S
#   (per binary and per run: --quick 90 and 180, else 300 and 600),
#   --cpu-build (configure with EMBER_CUDA=OFF: a dry run of this script on a machine without
#   nvcc). Environment: EMBER_COMMIT=<sha> overrides the commit; DOCTEST_FILTER="-tc=*alloc*"
#   narrows the memcheck runs; BENCH_ARGS is passed to ember-gpu-bench.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)

# --- arguments ---------------------------------------------------------------------------------
PREPARE=0 WITH_DATA=0 QUICK=0 STEPS="" CUDA_MODE=ON
BUILD_DIR=build/device JOBS=16 ARCHS=${EMBER_CUDA_ARCHS:-90}
SAN_TIMEOUT="" BENCH_TIMEOUT="" MIN_TIME="" DEADLINE=${DEADLINE:-}
DROP=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare) PREPARE=1 ;;
    --with-data) WITH_DATA=1 ;;
    --quick) QUICK=1 ;;
    --steps) STEPS=",${2//cuda/tests},"; shift ;;
    --skip-build) DROP+=(build) ;;
    --no-ctest) DROP+=(ctest) ;;
    --no-sanitizer) DROP+=(memcheck) ;;
    --no-bench) DROP+=(bench) ;;
    --no-example) DROP+=(example) ;;
    --deadline) DEADLINE=$2; shift ;;
    --min-time) MIN_TIME=$2; shift ;;
    --bench-timeout) BENCH_TIMEOUT=$2; shift ;;
    --sanitizer-timeout) SAN_TIMEOUT=$2; shift ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --archs) ARCHS=$2; shift ;;
    --cpu-build) CUDA_MODE=OFF ;;
    -h|--help) sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $QUICK == 1 ]]; then
  [[ -z $STEPS ]] && STEPS=",build,tests,example,bench,memcheck,"
  DEADLINE=${DEADLINE:-520} MIN_TIME=${MIN_TIME:-0.05} BENCH_TIMEOUT=${BENCH_TIMEOUT:-90} SAN_TIMEOUT=${SAN_TIMEOUT:-180}
else
  [[ -z $STEPS ]] && STEPS=",build,ctest,tests,memcheck,example,bench,"
  DEADLINE=${DEADLINE:-3000} BENCH_TIMEOUT=${BENCH_TIMEOUT:-300} SAN_TIMEOUT=${SAN_TIMEOUT:-600}
fi
for s in "${DROP[@]}"; do STEPS=${STEPS//,$s,/,}; done
has() { [[ $STEPS == *,$1,* ]]; }

# The tracked files' checksum, from the NUL-separated list in .deps/FILES: --prepare records it,
# the device compares, so a report never names a commit its source does not match.
tree_sum() { xargs -0 sha1sum <.deps/FILES 2>/dev/null | sha1sum | cut -c1-40; }

# --- prepare (here) ----------------------------------------------------------------------------
# Writes a relocatable <name>Config.cmake: an INTERFACE (header-only) or imported library target
# whose paths are computed from the config file's own location, so .deps works wherever it lands.
write_config() {  # name target kind(INTERFACE|STATIC|SHARED) [library file name]
  local name=$1 target=$2 kind=$3 lib=${4:-}
  local dir=.deps/lib/cmake/$name
  mkdir -p "$dir"
  {
    echo "# Written by scripts/device-check.sh --prepare: $name from the developer machine."
    # shellcheck disable=SC2016  # CMake's ${...}, written as they are
    echo 'get_filename_component(_ember_deps "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)'
    if [[ $kind != INTERFACE ]]; then
      echo 'include(CMakeFindDependencyMacro)'
      echo 'find_dependency(Threads)'
    fi
    echo "if(NOT TARGET $target)"
    echo "  add_library($target $kind IMPORTED)"
    echo "  set_target_properties($target PROPERTIES INTERFACE_INCLUDE_DIRECTORIES \"\${_ember_deps}/include\")"
    if [[ $kind != INTERFACE ]]; then
      echo "  set_target_properties($target PROPERTIES IMPORTED_LOCATION \"\${_ember_deps}/lib/$lib\""
      echo "                        INTERFACE_LINK_LIBRARIES Threads::Threads)"
      [[ $kind == SHARED ]] && echo "  set_target_properties($target PROPERTIES IMPORTED_SONAME \"$lib\")"
    fi
    echo "endif()"
    echo "set(${name}_FOUND TRUE)"
    echo "unset(_ember_deps)"
  } >"$dir/${name}Config.cmake"
}

if [[ $PREPARE == 1 ]]; then
  echo "device-check --prepare: filling $ROOT/.deps"
  exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qxF '/.deps/' "$exclude" 2>/dev/null || echo '/.deps/' >>"$exclude"
  echo "  /.deps/ is in $exclude"
  rm -rf .deps
  mkdir -p .deps/include .deps/lib .deps/share
  missing=0
  # Eigen: headers and its own (relocatable) CMake package files.
  if [[ -d /usr/include/eigen3/Eigen ]]; then
    cp -r /usr/include/eigen3 .deps/include/
    eigen_cfg=$(dirname "$(find /usr/share /usr/lib -name Eigen3Config.cmake -print -quit 2>/dev/null)")
    if [[ -f $eigen_cfg/Eigen3Config.cmake ]]; then
      mkdir -p .deps/share/eigen3 && cp -r "$eigen_cfg" .deps/share/eigen3/cmake
    else
      mkdir -p .deps/share/eigen3/cmake
      cat >.deps/share/eigen3/cmake/Eigen3Config.cmake <<'EOF'
get_filename_component(_ember_deps "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET Eigen3::Eigen)
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_ember_deps}/include/eigen3")
endif()
set(Eigen3_FOUND TRUE)
set(EIGEN3_VERSION_STRING 3.4.0)
EOF
    fi
    echo "  Eigen:   $(du -sh .deps/include/eigen3 | cut -f1)"
  else
    echo "  Eigen:   NOT FOUND (apt-get install libeigen3-dev)"; missing=1
  fi
  # doctest: one header; Debian's package files hard-code /usr, so write our own.
  if [[ -f /usr/include/doctest/doctest.h ]]; then
    cp -r /usr/include/doctest .deps/include/
    write_config doctest doctest::doctest INTERFACE
    echo "  doctest: $(du -sh .deps/include/doctest | cut -f1)"
  else
    echo "  doctest: NOT FOUND (apt-get install doctest-dev)"; missing=1
  fi
  # zlib, for the examples (the device image may lack the -dev headers).
  if [[ -f /usr/include/zlib.h ]]; then
    cp /usr/include/zlib.h /usr/include/zconf.h .deps/include/
    for f in /usr/lib/x86_64-linux-gnu/libz.a /usr/lib/libz.a; do
      [[ -f $f ]] && { cp "$f" .deps/lib/; break; }
    done
    echo "  zlib:    headers$( [[ -f .deps/lib/libz.a ]] && echo ' + libz.a')"
  else
    echo "  zlib:    not found (the examples will be off on the device unless it has zlib)"
  fi
  # Google Benchmark: headers and the library (static when Debian ships one, else shared).
  if [[ -f /usr/include/benchmark/benchmark.h ]]; then
    cp -r /usr/include/benchmark .deps/include/
    bench_a=$(find /usr/lib /usr/lib64 -name libbenchmark.a -print -quit 2>/dev/null)
    bench_so=$(find /usr/lib /usr/lib64 -name 'libbenchmark.so.*' -type f -print -quit 2>/dev/null)
    if [[ -n $bench_a ]]; then
      cp "$bench_a" .deps/lib/ && write_config benchmark benchmark::benchmark STATIC libbenchmark.a
      echo "  benchmark: headers + static library"
    elif [[ -n $bench_so ]]; then
      soname=$(objdump -p "$bench_so" 2>/dev/null | awk '/SONAME/ {print $2}')
      soname=${soname:-$(basename "$bench_so")}
      cp "$bench_so" ".deps/lib/$soname" && write_config benchmark benchmark::benchmark SHARED "$soname"
      echo "  benchmark: headers + shared library $soname (no static one here)"
    else
      rm -rf .deps/include/benchmark
      echo "  benchmark: headers but no library; the GPU benches will be off"
    fi
  else
    echo "  benchmark: not found; the GPU benches will be off on the device"
  fi
  if [[ $WITH_DATA == 1 ]]; then
    if [[ -d /usr/share/datasets/fashion-mnist ]]; then
      cp -r /usr/share/datasets/fashion-mnist .deps/fashion-mnist
      echo "  data:    Fashion-MNIST ($(du -sh .deps/fashion-mnist | cut -f1))"
    else
      echo "  data:    /usr/share/datasets/fashion-mnist not found (apt-get install dataset-fashion-mnist)"
    fi
    kjv=/usr/share/sword/modules/texts/ztext/engKJV2006eb
    if [[ -d $kjv ]]; then
      cp -r "$kjv" .deps/kjv
      echo "  data:    KJV SWORD module ($(du -sh .deps/kjv | cut -f1))"
    else
      echo "  data:    $kjv not found (apt-get install sword-text-kjv)"
    fi
  fi
  git ls-files -z >.deps/FILES 2>/dev/null
  {
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "dirty_files $(git status --porcelain 2>/dev/null | wc -l)"
    echo "tree_sum $(tree_sum)"
    echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >.deps/COMMIT
  echo "  commit:  $(head -n 1 .deps/COMMIT | cut -d' ' -f2) ($(sed -n 's/^dirty_files //p' .deps/COMMIT) changed files)"
  echo "  total:   $(du -sh .deps | cut -f1) (carry it: run(carry=[\".deps\"]))"
  exit $missing
fi

# --- check (on the GPU machine) ----------------------------------------------------------------
LOGS=$ROOT/build/device-check-logs
RESULT=${OUT:+$OUT/device-check.txt}
RESULT=${RESULT:-$ROOT/build/device-check.txt}
rm -rf "$LOGS"
mkdir -p "$LOGS" "$(dirname "$RESULT")"
RESERVE=20  # seconds kept for the report and the log archive at the end
T0=$SECONDS
FAILED=0
SUMMARY=()

left() { echo $((DEADLINE - (SECONDS - T0))); }
banner() { echo; echo "=== $* (t=$((SECONDS - T0))s, $(left)s left)"; }
record() {  # name status detail
  printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$LOGS/steps.tsv"
  SUMMARY+=("$(printf '%-26s %-8s %s' "$1" "$2" "${3:-}")")
  [[ $2 == FAIL ]] && FAILED=1
  echo "--> $1: $2${3:+ ($3)}"
  return 0
}
# run_cmd NAME NEED TIMEOUT LOG CMD...: runs CMD under `timeout` (capped by the deadline), its
# output appended to LOG; sets RC and DUR. Records NAME as skipped and returns 1 when fewer than
# NEED seconds are left. RC 124/137: timed out.
run_cmd() {
  local name=$1 need=$2 to=$3 log=$4 t0 l
  shift 4
  l=$(($(left) - RESERVE))
  if ((l < need)); then
    record "$name" skipped "deadline: ${l}s left before the report, the step needs ${need}s"
    RC=125 DUR=0
    return 1
  fi
  ((to > l)) && to=$l
  echo "### $(printf '%q ' "$@")" >>"$log"
  t0=$SECONDS
  timeout -k 10 "$to" "$@" </dev/null >>"$log" 2>&1
  RC=$? DUR=$((SECONDS - t0))
  echo "--> rc=$RC in ${DUR}s" >>"$log"
  return 0
}
timed_out() { [[ $RC == 124 || $RC == 137 ]]; }
last_block() { awk '/^### /{b=""} {b=b $0 "\n"} END{printf "%s", b}' "$1"; }  # the last command's output
doctest_counts() {  # "244 cases, 238 passed, 6 failed, 0 skipped" from the last command's doctest summary
  last_block "$1" | grep -a '\[doctest\] test cases:' | tail -n 1 |
    sed 's/.*test cases: *\([0-9]*\) *| *\([0-9]*\) passed *| *\([0-9]*\) failed *| *\([0-9]*\) skipped.*/\1 cases, \2 passed, \3 failed, \4 skipped/'
}

check_main() {
banner "machine"
START_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "date:    $START_DATE"
echo "mode:    $([[ $QUICK == 1 ]] && echo --quick || echo full), steps ${STEPS:1:${#STEPS}-2}, deadline ${DEADLINE}s"
GPU_NAME="" DRIVER="" CUDA_VERSION="unknown" HAVE_GPU=0
if command -v nvidia-smi >/dev/null; then
  timeout 20 nvidia-smi
  q=$(timeout 20 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  if [[ -n $q ]]; then
    GPU_NAME=${q%%,*} DRIVER=${q##*, } HAVE_GPU=1
  fi
  CUDA_VERSION=$(timeout 20 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
fi
if command -v nvcc >/dev/null; then
  nv=$(timeout 20 nvcc --version | sed -n 's/.*release [0-9.]*, V\([0-9.]*\).*/\1/p')
  CUDA_VERSION=${nv:-${CUDA_VERSION:-unknown}}
fi
echo "gpu:     ${GPU_NAME:-none visible}${DRIVER:+, driver $DRIVER}, CUDA ${CUDA_VERSION:-unknown}"
echo "host:    $(uname -srm), $(nproc) CPUs; $(cmake --version | head -n 1); $(c++ --version | head -n 1)"
# The commit: EMBER_COMMIT, else .deps/COMMIT (the device's copy has no .git of ours), else git.
COMMIT=${EMBER_COMMIT:-} COMMIT_NOTE="from EMBER_COMMIT"
if [[ -z $COMMIT && -f .deps/COMMIT ]]; then
  COMMIT=$(sed -n 's/^commit //p' .deps/COMMIT)
  COMMIT_NOTE="from .deps/COMMIT ($(sed -n 's/^prepared //p' .deps/COMMIT))"
  dirty=$(sed -n 's/^dirty_files //p' .deps/COMMIT)
  [[ ${dirty:-0} != 0 ]] && COMMIT_NOTE+=", with $dirty uncommitted changes then"
  if [[ -f .deps/FILES && $(tree_sum) != "$(sed -n 's/^tree_sum //p' .deps/COMMIT)" ]]; then
    COMMIT_NOTE+="; WARNING: the tracked files changed since --prepare, so this commit may not be what ran (re-run --prepare)"
  fi
elif [[ -z $COMMIT ]]; then
  COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown) COMMIT_NOTE="from git here"
fi
export EMBER_COMMIT=$COMMIT  # bench/CMakeLists.txt bakes it into the benches' context
echo "commit:  $COMMIT ($COMMIT_NOTE)"
if [[ $HAVE_GPU == 0 ]]; then
  record gpu FAIL "no GPU visible (nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'lists none' || echo 'not found')): the GPU steps are skipped"
fi

banner "dependencies"
PREFIXES=()
[[ -d .deps ]] && PREFIXES+=("$ROOT/.deps")
export LD_LIBRARY_PATH=$ROOT/.deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for dep in "Eigen:eigen3/Eigen/Core" "doctest:doctest/doctest.h" "zlib:zlib.h" "benchmark:benchmark/benchmark.h"; do
  name=${dep%%:*} header=${dep#*:}
  if [[ -f /usr/include/$header || -f /usr/local/include/$header ]]; then echo "$name: system"
  elif [[ -f .deps/include/$header ]]; then echo "$name: .deps"
  else echo "$name: NOT FOUND (run scripts/device-check.sh --prepare here and carry .deps)"
  fi
done
# cuDNN (for the comparison benches only): the system's, else the one in PyTorch's wheel, which
# ships libcudnn.so.9 but no libcudnn.so: links in /tmp/ember-cudnn give CMake a prefix to find.
cudnn=""
for d in /usr/include /usr/include/x86_64-linux-gnu /usr/local/cuda/include; do
  [[ -f $d/cudnn.h ]] && { cudnn="system $d/cudnn.h"; break; }
done
if [[ -z $cudnn ]]; then
  for sp in $(timeout 30 python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    h=$(find "$sp/nvidia" -maxdepth 4 -name cudnn.h -path '*/include/*' -print -quit 2>/dev/null)
    [[ -n $h ]] || continue
    src=$(dirname "$(dirname "$h")")
    rm -rf /tmp/ember-cudnn && mkdir -p /tmp/ember-cudnn/lib && ln -sfn "$src/include" /tmp/ember-cudnn/include
    for f in "$src"/lib/*.so*; do ln -sf "$f" /tmp/ember-cudnn/lib/; done
    so=$(find "$src/lib" -maxdepth 1 -name 'libcudnn.so.*' | sort | head -n 1)
    [[ -e /tmp/ember-cudnn/lib/libcudnn.so || -z $so ]] || ln -sf "$so" /tmp/ember-cudnn/lib/libcudnn.so
    export LD_LIBRARY_PATH=$src/lib:$LD_LIBRARY_PATH
    PREFIXES+=(/tmp/ember-cudnn)
    cudnn="PyTorch's wheel $src (linked in /tmp/ember-cudnn)"
    break
  done
fi
echo "cudnn: ${cudnn:-not found: the cuDNN comparison benches will not be built}"
# NCCL (dist collectives on CUDA tensors): ember needs nccl.h at build time and loads
# libnccl.so.2 at run time: the toolkit's, else the one in PyTorch's wheel (nvidia/nccl).
NCCL_DEF=()
nccl=""
for d in /usr/include /usr/local/cuda/include; do [[ -f $d/nccl.h ]] && { nccl="system $d/nccl.h"; break; }; done
if [[ -z $nccl ]]; then
  for sp in $(timeout 30 python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    h=$(find "$sp/nvidia" -maxdepth 4 -name nccl.h -path '*/include/*' -print -quit 2>/dev/null)
    [[ -n $h ]] || continue
    src=$(dirname "$(dirname "$h")")
    NCCL_DEF=("-DEMBER_NCCL_INCLUDE_DIR=$src/include")
    so=$(find "$src/lib" -maxdepth 1 -name 'libnccl.so*' | sort | head -n 1)
    [[ -n $so ]] && export EMBER_NCCL_LIBRARY=$so
    nccl="PyTorch's wheel $src (library ${so:-not found})"
    break
  done
fi
echo "nccl: ${nccl:-not found: CUDA collectives will report that NCCL is missing}"
PREFIX_PATH=$(IFS=';'; echo "${PREFIXES[*]}")

# --- build -------------------------------------------------------------------------------------
TARGETS=(ember_tests ember_dist_tests fashion_mnist char_lm ember-gpu-bench ember-conv-gpu-bench ember-lstm_gpu_bench
         ember-attention_gpu_bench ember-softmax_gpu_bench ember-g6g7_bench ember-quant-bench)
[[ $QUICK == 0 ]] && TARGETS+=(ember-bench)
binary() {  # target -> its executable in the build dir
  case $1 in
    ember_tests) echo "$BUILD_DIR/tests/ember_tests" ;;
    ember_dist_tests) echo "$BUILD_DIR/tests/dist/ember_dist_tests" ;;
    fashion_mnist|char_lm) echo "$BUILD_DIR/examples/$1/$1" ;;
    *) echo "$BUILD_DIR/bench/$1" ;;
  esac
}
BUILD_OK=1
declare -A BUILT=()
if has build; then
  banner "configure ($BUILD_DIR, EMBER_CUDA=$CUDA_MODE, archs $ARCHS)"
  gen=()
  command -v ninja >/dev/null && [[ ! -f $BUILD_DIR/CMakeCache.txt ]] && gen=(-G Ninja)
  if ! run_cmd configure 20 120 "$LOGS/build.log" cmake -S . -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DEMBER_CUDA="$CUDA_MODE" -DEMBER_CUDA_ARCHS="$ARCHS" -DEMBER_BENCH_TORCH=OFF "-DCMAKE_PREFIX_PATH=$PREFIX_PATH" \
      "${NCCL_DEF[@]}"; then
    BUILD_OK=0
  elif [[ $RC != 0 ]]; then
    tail -n 20 "$LOGS/build.log"
    record configure FAIL "exit $RC, see build.log"; BUILD_OK=0
  else
    grep -a -- '^-- ember' "$LOGS/build.log"
    if [[ -f $BUILD_DIR/build.ninja ]]; then
      known=$(ninja -C "$BUILD_DIR" -t targets all 2>/dev/null | sed 's/:.*//')
      keep=(-k 0)
    else
      known=$(cmake --build "$BUILD_DIR" --target help 2>/dev/null | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p')
      keep=(-k)
    fi
    want=() absent=()
    for t in "${TARGETS[@]}"; do
      if grep -qxF "$t" <<<"$known"; then want+=("$t"); else absent+=("$t"); fi
    done
    [[ ${#absent[@]} -gt 0 ]] && record "targets" absent "not in this configuration: ${absent[*]} (see the configure lines above)"
    what=(--target "${want[@]}")
    [[ $QUICK == 0 ]] && what=()  # everything
    banner "build (-j$JOBS, keep going): ${what[*]:-all}"
    if ! run_cmd build 30 300 "$LOGS/build.log" cmake --build "$BUILD_DIR" -j "$JOBS" "${what[@]}" -- "${keep[@]}"; then
      BUILD_OK=0
    elif timed_out; then record build FAIL "timeout after ${DUR}s"; BUILD_OK=0
    elif [[ $RC != 0 ]]; then
      grep -a -E 'error|FAILED' "$LOGS/build.log" | head -n 20
      record build FAIL "exit $RC in ${DUR}s (first errors above, all in build.log); built targets still run"; BUILD_OK=0
    else record build ok "${DUR}s"
    fi
  fi
fi
for t in "${TARGETS[@]}"; do
  # After a failed build an old binary may be left over: only one ninja says is up to date runs.
  if [[ -x $(binary "$t") ]] && { [[ $BUILD_OK == 1 ]] || ninja -C "$BUILD_DIR" -n "$t" 2>/dev/null | grep -q 'no work to do'; }; then
    BUILT[$t]=1
  fi
done
TESTS_BIN=$(binary ember_tests)
gpu_env=()
[[ $HAVE_GPU == 1 ]] && gpu_env=(EMBER_TEST_DEVICE=cuda)

# --- tests -------------------------------------------------------------------------------------
if has ctest && [[ -n ${BUILT[ember_tests]:-} ]]; then
  banner "ctest (all entries)"
  if run_cmd ctest 30 900 "$LOGS/ctest.txt" env "${gpu_env[@]}" ctest --test-dir "$BUILD_DIR" --output-on-failure -j4 --timeout 600; then
    tail -n 15 "$LOGS/ctest.txt"
    if timed_out; then record ctest FAIL "timeout after ${DUR}s"
    else record ctest "$([[ $RC == 0 ]] && echo ok || echo FAIL)" "${DUR}s"; fi
  fi
fi
if has tests; then
  banner "tests: $TESTS_BIN, every suite${gpu_env[*]:+, ${gpu_env[*]}}"
  if [[ -z ${BUILT[ember_tests]:-} ]]; then
    record tests FAIL "ember_tests was not built"
  elif run_cmd tests 20 180 "$LOGS/tests.txt" env "${gpu_env[@]}" "$TESTS_BIN" --duration=false; then
    echo "cases with output (failures, messages):"
    awk '/^TEST SUITE:/{s=$3} /^TEST CASE:/{sub(/^TEST CASE: */, ""); print "  " (s ? s ": " : "") $0; s=""}' \
      "$LOGS/tests.txt" | sort -u
    counts=$(doctest_counts "$LOGS/tests.txt")
    if timed_out; then record tests FAIL "timeout after ${DUR}s"
    elif grep -aq 'no CUDA GPU available' "$LOGS/tests.txt" && [[ $HAVE_GPU == 1 ]]; then
      record tests FAIL "ember saw no GPU, the GPU cases were skipped: $counts"
    elif [[ $RC == 0 && -n $counts ]]; then record tests ok "$counts (${DUR}s)"
    else record tests FAIL "exit $RC: ${counts:-no doctest summary} (${DUR}s)"
    fi
  fi
fi

# The dist suite as one process: on a GPU its NCCL case runs every collective's CUDA path and
# DDP through NCCL with a world of 1 (two ranks cannot share one GPU).
if has tests && [[ -n ${BUILT[ember_dist_tests]:-} ]]; then
  banner "dist: $(binary ember_dist_tests) (a world of 1; NCCL on the GPU)"
  if run_cmd dist 10 60 "$LOGS/dist.txt" "$(binary ember_dist_tests)" --duration=false; then
    grep -a -E 'NCCL|skipped' "$LOGS/dist.txt" | head -n 5
    counts=$(doctest_counts "$LOGS/dist.txt")
    if timed_out; then record dist FAIL "timeout after ${DUR}s"
    elif [[ $RC == 0 && -n $counts ]]; then record dist ok "$counts (${DUR}s)"
    else record dist FAIL "exit $RC: ${counts:-no doctest summary} (${DUR}s)"
    fi
  fi
fi

# --- benches -----------------------------------------------------------------------------------
if has bench; then
  benches=(ember-gpu-bench ember-conv-gpu-bench ember-lstm_gpu_bench ember-attention_gpu_bench ember-softmax_gpu_bench)
  [[ $QUICK == 0 ]] && benches+=(ember-bench)
  if [[ $HAVE_GPU == 0 ]]; then record benches skipped "no GPU visible"; benches=(); fi
  for b in "${benches[@]}"; do
    banner "bench: $b"
    if [[ -z ${BUILT[$b]:-} ]]; then record "$b" absent "not built (see the build and targets lines)"; continue; fi
    args=()
    if [[ $b != ember-bench ]]; then
      args=("--benchmark_out=$LOGS/bench-$b.json" --benchmark_out_format=json)
      [[ -n $MIN_TIME ]] && args+=("--benchmark_min_time=$MIN_TIME")
      [[ $b == ember-gpu-bench && -n ${BENCH_ARGS:-} ]] && { read -r -a extra <<<"$BENCH_ARGS"; args+=("${extra[@]}"); }
    fi
    run_cmd "$b" 15 "$BENCH_TIMEOUT" "$LOGS/bench-$b.txt" "$(binary "$b")" "${args[@]}" || continue
    grep -a -E '^(G[0-9]|mem/|W[0-9])' "$LOGS/bench-$b.txt" | grep -v '^G4 ' | cut -c1-150
    errors=$(grep -ac 'ERROR OCCURRED' "$LOGS/bench-$b.txt")
    if timed_out; then record "$b" timeout "after ${DUR}s (--bench-timeout, --min-time)"
    elif [[ $RC != 0 ]]; then record "$b" FAIL "exit $RC after ${DUR}s"
    elif [[ $errors != 0 ]]; then record "$b" FAIL "${DUR}s, $errors cases ended with an error (grep 'ERROR OCCURRED')"
    else record "$b" ok "${DUR}s"
    fi
  done
  if [[ $HAVE_GPU == 1 ]]; then
    banner "bench: PyTorch SDPA peer (python3 bench/g4_sdpa_torch.py)"
    if run_cmd "sdpa peer (PyTorch)" 20 90 "$LOGS/sdpa.txt" env PYTHONUNBUFFERED=1 python3 bench/g4_sdpa_torch.py; then
      cat "$LOGS/sdpa.txt"
      n=$(grep -ac '^G4 ' "$LOGS/sdpa.txt")
      if timed_out; then record "sdpa peer (PyTorch)" timeout "after ${DUR}s"
      elif [[ $n -gt 0 ]]; then record "sdpa peer (PyTorch)" ok "${DUR}s, $n cases, $(grep -a '^# ' "$LOGS/sdpa.txt" | head -n 1 | cut -c3-)"
      else record "sdpa peer (PyTorch)" error "no figures, exit $RC: $(grep -av -e '^###' -e '^-->' "$LOGS/sdpa.txt" | tail -n 1)"
      fi
    fi
    # G6/G7 end to end, ember then the PyTorch peers, one JSON line per case into e2e.txt.
    banner "bench: G6/G7 end to end (ember-g6g7_bench, bench/g7_lstm_torch.py, bench/g6_gpt_torch.py)"
    e2e=("ember G6/G7:150:$(binary ember-g6g7_bench)" "torch G7:120:python3 bench/g7_lstm_torch.py"
         "torch G6:180:python3 bench/g6_gpt_torch.py")
    for entry in "${e2e[@]}"; do
      IFS=: read -r name to cmd <<<"$entry"
      read -r -a argv <<<"$cmd"
      if [[ $name == "ember G6/G7" && -z ${BUILT[ember-g6g7_bench]:-} ]]; then record "$name" absent "not built"; continue; fi
      run_cmd "$name" 30 "$to" "$LOGS/e2e.txt" env PYTHONUNBUFFERED=1 "${argv[@]}" || continue
      last_block "$LOGS/e2e.txt" | grep -a -v -e '^{' -e '^-->' | tail -n 8
      n=$(last_block "$LOGS/e2e.txt" | grep -ac '^{')
      if timed_out; then record "$name" timeout "after ${DUR}s, $n cases"
      elif [[ $RC != 0 ]]; then record "$name" FAIL "exit $RC after ${DUR}s, $n cases"
      elif [[ $n == 0 ]]; then record "$name" error "no figures: $(last_block "$LOGS/e2e.txt" | grep -av '^-->' | tail -n 1)"
      else record "$name" ok "${DUR}s, $n cases"
      fi
    done
    # int8 Linear (dp4a) against the bf16 Linear at batch 8192 (docs/perf/quantization.md).
    banner "bench: int8 vs bf16 Linear (ember-quant-bench --device cuda)"
    if [[ -z ${BUILT[ember-quant-bench]:-} ]]; then record "int8 vs bf16" absent "not built"
    elif run_cmd "int8 vs bf16" 10 60 "$LOGS/quant.txt" "$(binary ember-quant-bench)" --device cuda --reps 20; then
      last_block "$LOGS/quant.txt" | grep -a -e '^linear' -e '^result:' | tail -n 4
      res=$(last_block "$LOGS/quant.txt" | grep -a '^result:' | tail -n 1)
      if timed_out; then record "int8 vs bf16" timeout "after ${DUR}s"
      elif [[ $RC != 0 || -z $res ]]; then record "int8 vs bf16" FAIL "exit $RC"
      else record "int8 vs bf16" ok "${res#result: }"
      fi
    fi
  fi
fi

# --- examples ----------------------------------------------------------------------------------
first_dir() { for d in "$@"; do [[ -d $d ]] && { echo "$d"; return; }; done; }
example() {  # name need timeout cmd...
  local name=$1 need=$2 to=$3
  shift 3
  run_cmd "$name" "$need" "$to" "$LOGS/examples.txt" "$@" || return 0
  local last
  last=$(last_block "$LOGS/examples.txt" | grep -a -E '^(final |error:|no CUDA|stopped )' | tail -n 1)
  if timed_out; then record "$name" timeout "after ${DUR}s"
  elif [[ $RC == 0 ]]; then record "$name" ok "${DUR}s, $(last_block "$LOGS/examples.txt" | grep -a -E '^final ' | tail -n 1)"
  else record "$name" FAIL "exit $RC: $last"
  fi
}
if has example; then
  banner "examples on cuda"
  fm=$(first_dir .deps/fashion-mnist /usr/share/datasets/fashion-mnist)
  kjv=$(first_dir .deps/kjv /usr/share/sword/modules/texts/ztext/engKJV2006eb)
  if [[ $HAVE_GPU == 0 ]]; then record examples skipped "no GPU visible"
  else
    if [[ -z ${BUILT[fashion_mnist]:-} ]]; then record fashion_mnist FAIL "not built"
    elif [[ -z $fm ]]; then record fashion_mnist skipped "no data (device-check.sh --prepare --with-data)"
    else example fashion_mnist 15 60 "$(binary fashion_mnist)" --device cuda --epochs 2 --batch 256 --data "$fm" --checkpoint ""
    fi
    minutes=1
    [[ $QUICK == 1 ]] && minutes=0.5
    for m in lstm transformer; do
      if [[ -z ${BUILT[char_lm]:-} ]]; then record "char_lm $m" FAIL "not built"
      elif [[ -z $kjv ]]; then record "char_lm $m" skipped "no data (device-check.sh --prepare --with-data)"
      else example "char_lm $m" 30 150 "$(binary char_lm)" --model "$m" --device cuda --steps 250 --minutes "$minutes" \
             --log-every 50 --eval-every 250 --sample 120 --data "$kjv" --checkpoint ""
      fi
    done
    # The transformer again with its step captured as a CUDA graph (docs/cuda.md): its tokens/s
    # lines against the eager run's above, and the same held-out loss to rounding.
    if [[ -n ${BUILT[char_lm]:-} && -n $kjv ]]; then
      example "char_lm transformer --cuda-graph" 30 150 "$(binary char_lm)" --model transformer --device cuda \
        --cuda-graph --steps 250 --minutes "$minutes" --log-every 50 --eval-every 250 --sample 120 --data "$kjv" --checkpoint ""
    fi
  fi
  tail -n 25 "$LOGS/examples.txt" 2>/dev/null
fi

# --- memcheck ----------------------------------------------------------------------------------
if has memcheck; then
  banner "compute-sanitizer memcheck"
  if [[ $HAVE_GPU == 0 ]]; then record memcheck skipped "no GPU visible"
  elif [[ -z ${BUILT[ember_tests]:-} ]]; then record memcheck FAIL "ember_tests was not built"
  elif ! command -v compute-sanitizer >/dev/null; then record memcheck skipped "compute-sanitizer not on PATH"
  else
    echo "The case 'an absurd allocation ...' is excluded (-tce): its deliberate cudaMalloc failures"
    echo "would count as memcheck errors. It runs in the tests step. Leak checking is off."
    read -r -a narrow <<<"${DOCTEST_FILTER:-}"
    for part in "cuda suites:--test-suite=cuda*" "other suites:--test-suite-exclude=cuda*"; do
      name="memcheck ${part%%:*}"
      run_cmd "$name" 40 "$SAN_TIMEOUT" "$LOGS/memcheck.txt" env "${gpu_env[@]}" compute-sanitizer --tool memcheck \
        --error-exitcode 86 --print-limit 50 "$TESTS_BIN" "${part#*:}" "--test-case-exclude=*absurd allocation*" \
        "${narrow[@]}" || continue
      summary=$(last_block "$LOGS/memcheck.txt" | grep -a 'ERROR SUMMARY' | tail -n 1 | sed 's/=* *//')
      tests=$(doctest_counts "$LOGS/memcheck.txt")
      if last_block "$LOGS/memcheck.txt" | grep -aq 'Device not supported'; then record "$name" skipped "compute-sanitizer does not support this device"
      elif timed_out; then record "$name" timeout "after ${DUR}s: only part of the cases ran (--sanitizer-timeout)"
      elif [[ $RC == 86 ]] || [[ -n $summary && $summary != "ERROR SUMMARY: 0 errors" ]]; then
        last_block "$LOGS/memcheck.txt" | grep -a -m 10 -E '^=+ +(Invalid|Program hit|Uninitialized|Out-of-range|Misaligned)'
        record "$name" FAIL "${summary:-exit $RC}, see memcheck.txt (${DUR}s)"
      elif [[ -z $summary ]]; then record "$name" FAIL "no ERROR SUMMARY line, exit $RC (${DUR}s)"
      else record "$name" ok "$summary; tests under it: $tests (${DUR}s)"
      fi
    done
    # Shared-memory races in the GEMM kernels (the sm_90a kernel's mbarrier ring above all).
    name="racecheck gemm"
    if run_cmd "$name" 40 "$SAN_TIMEOUT" "$LOGS/racecheck.txt" env "${gpu_env[@]}" compute-sanitizer --tool racecheck \
        --error-exitcode 86 --print-limit 50 "$TESTS_BIN" --test-suite=cuda_runtime \
        "--test-case=*sm_90a*,*two GEMM backends*"; then
      summary=$(last_block "$LOGS/racecheck.txt" | grep -a 'ERROR SUMMARY' | tail -n 1 | sed 's/=* *//')
      if timed_out; then record "$name" timeout "after ${DUR}s (--sanitizer-timeout)"
      elif [[ $RC == 86 ]] || [[ -n $summary && $summary != "ERROR SUMMARY: 0 errors" ]]; then
        record "$name" FAIL "${summary:-exit $RC}, see racecheck.txt (${DUR}s)"
      else record "$name" ok "${summary:-exit $RC} (${DUR}s)"
      fi
    fi
  fi
fi

# --- report ------------------------------------------------------------------------------------
banner "report"
slug=$(python3 scripts/gpu_report.py --slug --device "${GPU_NAME:-unknown}" 2>/dev/null || echo unknown)
report_dir=docs/perf
[[ $HAVE_GPU == 0 ]] && report_dir=$LOGS  # no GPU: leave docs/perf alone
inputs=()
for b in "$LOGS"/bench-*.txt; do
  [[ -f $b ]] || continue
  inputs+=(--bench "$b")  # the console first; the JSON of the same binary, where valid, wins
  [[ -s ${b%.txt}.json ]] && inputs+=(--bench "${b%.txt}.json")
done
[[ -f $LOGS/sdpa.txt ]] && inputs+=(--sdpa "$LOGS/sdpa.txt")
[[ -f $LOGS/e2e.txt ]] && inputs+=(--e2e "$LOGS/e2e.txt")
[[ -f $LOGS/tests.txt ]] && inputs+=(--tests "$LOGS/tests.txt")
[[ -f $LOGS/examples.txt ]] && inputs+=(--examples "$LOGS/examples.txt")
[[ -f $LOGS/memcheck.txt ]] && inputs+=(--memcheck "$LOGS/memcheck.txt")
origin="Written by \`scripts/device-check.sh $([[ $QUICK == 1 ]] && echo --quick)\` (through \`scripts/gpu_report.py\`); commit $COMMIT_NOTE."
if timeout 60 python3 scripts/gpu_report.py "${inputs[@]}" --steps "$LOGS/steps.tsv" \
     --device "${GPU_NAME:-unknown}" --driver "${DRIVER:-unknown}" --cuda "${CUDA_VERSION:-unknown}" \
     --commit "$COMMIT" --date "$START_DATE" --origin "$origin" \
     --md "$report_dir/gpu-$slug.md" --json "$report_dir/gpu-$slug.json"; then
  record report ok "$report_dir/gpu-$slug.md and .json"
  head -c 1500 "$report_dir/gpu-$slug.json"; echo
  [[ -n ${OUT:-} ]] && cp "$report_dir/gpu-$slug.md" "$report_dir/gpu-$slug.json" "$OUT/"
else
  record report FAIL "scripts/gpu_report.py failed (the raw logs are in the archive)"
fi
if [[ -n ${OUT:-} ]]; then
  timeout 60 tar -czf "$OUT/device-check-logs.tar.gz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" &&
    echo "logs: \$OUT/device-check-logs.tar.gz ($(du -h "$OUT/device-check-logs.tar.gz" | cut -f1))"
fi

banner "summary"
printf '%s\n' "${SUMMARY[@]}"
not_done=$(awk -F'\t' '$2 == "skipped" || $2 == "timeout" || $2 == "absent" || $3 ~ /^timeout/ {
  printf "  %s: %s (%s)\n", $1, $2, $3}' "$LOGS/steps.tsv")
if [[ -n $not_done ]]; then echo "skipped, timed out or absent:"; echo "$not_done"; else echo "nothing was skipped or timed out"; fi
echo "console log: $RESULT; raw logs: $LOGS"
if [[ $FAILED == 1 || $BUILD_OK == 0 ]]; then
  echo "device-check: FAILED ($((SECONDS - T0))s)"
  return 1
fi
echo "device-check: all passed ($((SECONDS - T0))s)"
}

check_main 2>&1 | tee "$RESULT"
exit "${PIPESTATUS[0]}"
