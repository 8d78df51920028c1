#!/usr/bin/env bash
# Installs what ember needs to build, test and train on Debian 12 (run as root).
# Idempotent: checks every package with dpkg-query first, runs `apt-get update` once and only
# when something is missing, then installs only the missing packages.
#
#   bash scripts/setup.sh                  # build + test dependencies, Fashion-MNIST and the KJV text
#   bash scripts/setup.sh --with-libtorch  # also libtorch-dev + OpenBLAS (large; bench peer only)
set -euo pipefail

packages=(build-essential cmake ccache libeigen3-dev doctest-dev libbenchmark-dev zlib1g-dev nlohmann-json3-dev
          openmpi-bin libopenmpi-dev libonnx-dev libprotobuf-dev protobuf-compiler dataset-fashion-mnist sword-text-kjv)
for arg in "$@"; do
  case "$arg" in
    # libtorch-dev only Recommends a fast BLAS; without one it runs on the reference BLAS,
    # which would make the peer ~10x slower than WORKLOADS.md's "libtorch with OpenBLAS".
    # The OpenMP build of OpenBLAS follows torch::set_num_threads (omp_set_num_threads).
    --with-libtorch) packages+=(libtorch-dev libopenblas0-openmp) ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

is_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

missing=()
for p in "${packages[@]}"; do
  if is_installed "$p"; then
    echo "setup: $p: installed ($(dpkg-query -W -f='${Version}' "$p"))"
  else
    echo "setup: $p: missing"
    missing+=("$p")
  fi
done

# Optional Python peers of the tests: the safetensors reference reader, and onnx (checker) +
# onnxruntime for the ONNX export checks (each test skips without its module).
python_reader() {
  command -v python3 >/dev/null || return 0
  if python3 -c 'import numpy, safetensors, onnx, onnxruntime' 2>/dev/null; then
    echo "setup: python safetensors + numpy + onnx + onnxruntime: present"
  elif timeout 600 python3 -m pip install -q safetensors numpy onnx onnxruntime >/dev/null 2>&1; then
    echo "setup: python safetensors + numpy + onnx + onnxruntime: newly installed"
  else
    echo "setup: python safetensors/numpy/onnx/onnxruntime: not installed (the tests that read them skip)"
  fi
}

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  python_reader
  exit 0
fi

if ((EUID != 0)); then
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
  if is_installed "$p"; then
    echo "setup: $p: newly installed ($(dpkg-query -W -f='${Version}' "$p"))"
  else
    echo "setup: $p: FAILED to install" >&2
    exit 1
  fi
done
python_reader
