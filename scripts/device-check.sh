#!/usr/bin/env bash
# Builds ember with the CUDA backend on a GPU machine and runs everything that needs the GPU:
# the whole CTest suite (the `cuda` suite included), the `cuda` suite again under
# compute-sanitizer memcheck, the example on the GPU and the benchmark binaries that exist.
# Everything lands in one results file: $OUT/device-check.txt when OUT is set (the lent device
# machine), else build/device-check.txt. Exits non-zero when the build or a test fails.
#
# Two places, two modes (see docs/cuda.md):
#
#   HERE, on a developer machine (no GPU needed), once:
#     bash scripts/device-check.sh --prepare [--with-data]
#   copies the headers the build needs and the device machine may lack (Eigen, doctest, zlib,
#   Google Benchmark's headers and library) into .deps/ (a prefix: include/, lib/, share/, with
#   relocatable CMake package files), records the git commit in .deps/COMMIT and adds /.deps/ to
#   .git/info/exclude so it is never committed. --with-data also copies the Fashion-MNIST files
#   (30 MB) to .deps/fashion-mnist and the KJV SWORD module (3 MB) to .deps/kjv for the examples.
#
#   THERE, on the GPU machine, from the repository root (carry .deps with the call):
#     bash scripts/device-check.sh [--steps LIST] [options]
#   Steps, in this order: build (configure + build), ctest (all suites), cuda (the cuda suite
#   again, for its summary), memcheck (the cuda suite under compute-sanitizer), example
#   (fashion_mnist and char_lm --device cuda, when the data is there), bench (ember-gpu-bench,
#   the cuDNN comparisons ember-conv-gpu-bench, ember-lstm_gpu_bench, ember-attention_gpu_bench,
#   ember-softmax_gpu_bench, then ember-bench; PyTorch's SDPA: python3 bench/g4_sdpa_torch.py).
#   Default: all. --skip-build, --no-ctest, --no-sanitizer, --no-example, --no-bench drop one.
#   A lent machine allows 10 minutes a command: split, e.g. --steps build,ctest,cuda,example
#   then --steps memcheck,bench on the same warm machine (build outputs stay between calls).
#   Options: --build-dir DIR (default build/device), --jobs N (default 16), --archs LIST
#   (default $EMBER_CUDA_ARCHS or 90), --sanitizer-timeout S (default 240), --bench-timeout S
#   (default 120 per binary). DOCTEST_FILTER="-tc=*allocator*" narrows the memcheck run and
#   BENCH_ARGS="--benchmark_filter=G1" is passed to ember-gpu-bench.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)

# --- arguments ---------------------------------------------------------------------------------
PREPARE=0 WITH_DATA=0 STEPS=",build,ctest,cuda,memcheck,example,bench,"
BUILD_DIR=build/device JOBS=16 SAN_TIMEOUT=240 BENCH_TIMEOUT=120 ARCHS=${EMBER_CUDA_ARCHS:-90}
drop() { STEPS=${STEPS//,$1,/,}; }
has() { [[ $STEPS == *,$1,* ]]; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare) PREPARE=1 ;;
    --with-data) WITH_DATA=1 ;;
    --steps) STEPS=",$2,"; shift ;;
    --skip-build) drop build ;;
    --no-ctest) drop ctest ;;
    --no-sanitizer) drop memcheck ;;
    --no-bench) drop bench ;;
    --no-example) drop example ;;
    --bench-timeout) BENCH_TIMEOUT=$2; shift ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --sanitizer-timeout) SAN_TIMEOUT=$2; shift ;;
    --archs) ARCHS=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- prepare (here) ----------------------------------------------------------------------------
# Writes a relocatable <name>Config.cmake: an INTERFACE (header-only) or imported library target
# whose paths are computed from the config file's own location, so .deps works wherever it lands.
write_config() {  # name target kind(INTERFACE|STATIC|SHARED) [library file name]
  local name=$1 target=$2 kind=$3 lib=${4:-}
  local dir=.deps/lib/cmake/$name
  mkdir -p "$dir"
  {
    echo "# Written by scripts/device-check.sh --prepare: $name from the developer machine."
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
  # zlib, for the example (the device image may lack the -dev headers).
  if [[ -f /usr/include/zlib.h ]]; then
    cp /usr/include/zlib.h /usr/include/zconf.h .deps/include/
    for f in /usr/lib/x86_64-linux-gnu/libz.a /usr/lib/libz.a; do
      [[ -f $f ]] && { cp "$f" .deps/lib/; break; }
    done
    echo "  zlib:    headers$( [[ -f .deps/lib/libz.a ]] && echo ' + libz.a')"
  else
    echo "  zlib:    not found (the example will be off on the device unless it has zlib)"
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
      echo "  benchmark: headers but no library; ember-kernels will be off"
    fi
  else
    echo "  benchmark: not found; ember-kernels will be off on the device"
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
  {
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "dirty_files $(git status --porcelain 2>/dev/null | wc -l)"
    echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >.deps/COMMIT
  echo "  total:   $(du -sh .deps | cut -f1) (carry it: run(carry=[\".deps\"]))"
  exit $missing
fi

# --- check (on the GPU machine) ----------------------------------------------------------------
if [[ -n ${OUT:-} ]]; then RESULT=$OUT/device-check.txt; else RESULT=$ROOT/build/device-check.txt; fi
mkdir -p "$(dirname "$RESULT")" build

check_main() {
start=$SECONDS
declare -a SUMMARY=()
FAILED=0
step() { echo; echo "=== $* ($((SECONDS - start))s)"; }
record() {  # name status detail
  SUMMARY+=("$(printf '%-22s %-12s %s' "$1" "$2" "${3:-}")")
  [[ $2 == FAIL ]] && FAILED=1
  return 0
}

step "machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if git rev-parse HEAD >/dev/null 2>&1; then
  echo "commit:  $(git rev-parse HEAD) ($(git status --porcelain 2>/dev/null | wc -l) changed files)"
elif [[ -f .deps/COMMIT ]]; then
  echo "commit:  $(awk '/^commit/ {print $2}' .deps/COMMIT) (from .deps/COMMIT; $(awk '/^dirty_files/ {print $2}' .deps/COMMIT) changed files when prepared)"
else
  echo "commit:  unknown (no git here and no .deps/COMMIT)"
fi
echo "host:    $(uname -srm), $(nproc) CPUs"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null |
    sed 's/^/gpu:     /' || true
else
  echo "nvidia-smi: not found (no NVIDIA driver on this machine?)"
fi
if command -v nvcc >/dev/null; then
  nvcc --version | tail -n 2
else
  echo "nvcc: not found on PATH"
fi
echo "cmake:   $(cmake --version | head -n 1)"
echo "c++:     $(c++ --version | head -n 1)"

step "dependencies"
PREFIXES=()
[[ -d .deps ]] && PREFIXES+=("$ROOT/.deps")
have_header() {  # header, extra include dir
  [[ -f /usr/include/$1 || -f /usr/local/include/$1 || ( -n ${2:-} && -f $2/$1 ) ]]
}
for dep in "Eigen:eigen3/Eigen/Core" "doctest:doctest/doctest.h" "zlib:zlib.h" "benchmark:benchmark/benchmark.h"; do
  name=${dep%%:*} header=${dep#*:}
  if [[ -f /usr/include/$header || -f /usr/local/include/$header ]]; then
    echo "$name: system ($header)"
  elif [[ -f .deps/include/$header ]]; then
    echo "$name: carried .deps/include/$header"
  else
    echo "$name: NOT FOUND"
  fi
done
EXTRA_CMAKE=()
if ! have_header zlib.h .deps/include; then
  echo "zlib missing: building without the example (-DEMBER_BUILD_EXAMPLES=OFF)"
  EXTRA_CMAKE+=(-DEMBER_BUILD_EXAMPLES=OFF)
  drop example
fi
# cuDNN and NCCL: the system's, else the ones inside Python's nvidia-* wheels. Nothing in ember
# needs them yet; they are found and printed so the later benches and dist code can use them.
SITE_DIRS=$(python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
for lib in cudnn nccl; do
  found=""
  for d in /usr/include /usr/local/cuda/include ${CUDA_HOME:+$CUDA_HOME/include}; do
    [[ -f $d/$lib.h ]] && { found="system $d/$lib.h"; break; }
  done
  if [[ -z $found ]]; then
    for sp in $SITE_DIRS; do
      h=$(find "$sp/nvidia" -maxdepth 4 -name "$lib.h" -path "*/include/*" -print -quit 2>/dev/null)
      if [[ -n $h ]]; then
        prefix=$(dirname "$(dirname "$h")")
        libs=("$prefix"/lib/lib"$lib"*)
        found="python wheel $prefix (lib: $([[ -e ${libs[0]} ]] && basename "${libs[0]}" || echo none))"
        PREFIXES+=("$prefix")
        break
      fi
    done
  fi
  echo "$lib: ${found:-not found}"
done
PREFIX_PATH=$(IFS=';'; echo "${PREFIXES[*]:-}")

BUILD_OK=1
echo "steps:   ${STEPS:1:${#STEPS}-2}"
if has build; then
  step "configure ($BUILD_DIR, EMBER_CUDA=ON, EMBER_CUDA_ARCHS=$ARCHS)"
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  [[ -f $BUILD_DIR/CMakeCache.txt ]] && GEN=()  # keep the generator of an existing build dir
  if cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=ON \
      -DEMBER_CUDA_ARCHS="$ARCHS" -DEMBER_BENCH_TORCH=OFF ${PREFIX_PATH:+-DCMAKE_PREFIX_PATH="$PREFIX_PATH"} \
      "${EXTRA_CMAKE[@]}"; then
    record configure ok
  else
    record configure FAIL; BUILD_OK=0
  fi
  if [[ $BUILD_OK == 1 ]]; then
    step "build (-j$JOBS)"
    t0=$SECONDS
    if cmake --build "$BUILD_DIR" -j"$JOBS"; then
      record build ok "$((SECONDS - t0))s"
    else
      record build FAIL "$((SECONDS - t0))s"; BUILD_OK=0
    fi
  fi
else
  [[ -x $BUILD_DIR/tests/ember_tests ]] || { record build FAIL "--skip-build but no $BUILD_DIR/tests/ember_tests"; BUILD_OK=0; }
fi

TESTS=$BUILD_DIR/tests/ember_tests
if [[ $BUILD_OK == 1 ]]; then
  if has ctest; then
    step "ctest (all suites)"
    t0=$SECONDS
    if ctest --test-dir "$BUILD_DIR" --output-on-failure -j4 --timeout 600; then
      record ctest ok "$((SECONDS - t0))s"
    else
      record ctest FAIL "$((SECONDS - t0))s"
    fi
  fi

  if has cuda; then
  step "cuda suite, verbose (doctest summary)"
  cuda_log=$(mktemp)
  "$TESTS" --test-suite=cuda --duration=true >"$cuda_log" 2>&1
  rc=$?
  tail -n 60 "$cuda_log"
  counts=$(grep -m1 'test cases:' "$cuda_log" | sed 's/.*test cases: *//')
  if grep -q "no CUDA GPU available" "$cuda_log"; then
    record "cuda suite" FAIL "ember saw no GPU: the GPU cases were skipped ($counts)"
  elif [[ $rc == 0 ]]; then
    record "cuda suite" ok "$counts"
  else
    record "cuda suite" FAIL "exit $rc: $counts"
  fi
  rm -f "$cuda_log"
  fi

  if has memcheck; then
    step "cuda suite under compute-sanitizer memcheck (timeout ${SAN_TIMEOUT}s)"
    if command -v compute-sanitizer >/dev/null; then
      t0=$SECONDS
      san_log=$(mktemp)
      # leak checking is off: the caching allocator keeps its blocks until the process ends.
      timeout "$SAN_TIMEOUT" compute-sanitizer --tool memcheck --error-exitcode 86 \
        "$TESTS" --test-suite=cuda ${DOCTEST_FILTER:-} >"$san_log" 2>&1
      rc=$?
      tail -n 60 "$san_log"
      if grep -q "Device not supported" "$san_log"; then
        record memcheck skipped "compute-sanitizer does not support this device"
      elif [[ $rc == 124 ]]; then
        record memcheck timeout "after ${SAN_TIMEOUT}s (narrow it with DOCTEST_FILTER)"
      elif [[ $rc == 0 ]]; then
        record memcheck ok "$((SECONDS - t0))s, $(grep -m1 'ERROR SUMMARY' "$san_log" || echo 'no summary line')"
      else
        record memcheck FAIL "exit $rc, $(grep -m1 'ERROR SUMMARY' "$san_log" || echo 'see the log above')"
      fi
      rm -f "$san_log"
    else
      record memcheck skipped "compute-sanitizer not on PATH"
    fi
  fi

  if has example && [[ -x $BUILD_DIR/examples/fashion_mnist/fashion_mnist ]]; then
    data=""
    for d in .deps/fashion-mnist /usr/share/datasets/fashion-mnist; do [[ -d $d ]] && { data=$d; break; }; done
    if [[ -n $data ]]; then
      step "example: fashion_mnist --device cuda (1 epoch)"
      if timeout 300 "$BUILD_DIR/examples/fashion_mnist/fashion_mnist" --device cuda --epochs 1 --data "$data"; then
        record "fashion_mnist cuda" ok
      else
        record "fashion_mnist cuda" FAIL
      fi
    else
      record "fashion_mnist cuda" skipped "no data (device-check.sh --prepare --with-data)"
    fi
  fi
  if has example && [[ -x $BUILD_DIR/examples/char_lm/char_lm ]]; then
    data=""
    for d in .deps/kjv /usr/share/sword/modules/texts/ztext/engKJV2006eb; do [[ -d $d ]] && { data=$d; break; }; done
    if [[ -n $data ]]; then
      for m in transformer lstm; do
        step "example: char_lm --model $m --device cuda (300 steps)"
        if timeout 300 "$BUILD_DIR/examples/char_lm/char_lm" --model $m --device cuda --steps 300 --data "$data" \
             --checkpoint "" --sample 200; then
          record "char_lm $m cuda" ok
        else
          record "char_lm $m cuda" FAIL
        fi
      done
    else
      record "char_lm cuda" skipped "no data (device-check.sh --prepare --with-data)"
    fi
  fi

  if has bench; then
    for b in ember-gpu-bench ember-conv-gpu-bench ember-lstm_gpu_bench ember-attention_gpu_bench \
             ember-softmax_gpu_bench ember-bench; do
      exe=$BUILD_DIR/bench/$b
      if [[ -x $exe ]]; then
        step "bench: $b"
        args=()
        [[ $b == ember-gpu-bench && -n ${BENCH_ARGS:-} ]] && read -r -a args <<<"$BENCH_ARGS"
        t0=$SECONDS
        timeout "$BENCH_TIMEOUT" "$exe" "${args[@]}"
        rc=$?
        if [[ $rc == 0 ]]; then
          record "$b" ok "$((SECONDS - t0))s"
        elif [[ $rc == 124 ]]; then
          record "$b" timeout "after ${BENCH_TIMEOUT}s (--bench-timeout, BENCH_ARGS)"
        else
          record "$b" FAIL "exit $rc"
        fi
      else
        record "$b" absent
      fi
    done
  fi
fi

step "summary"
printf '%s\n' "${SUMMARY[@]}"
echo "results: $RESULT"
if [[ $FAILED == 1 || $BUILD_OK == 0 ]]; then
  echo "device-check: FAILED ($((SECONDS - start))s)"
  exit 1
fi
echo "device-check: all passed ($((SECONDS - start))s)"
}

check_main 2>&1 | tee "$RESULT"
exit "${PIPESTATUS[0]}"
