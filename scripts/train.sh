#!/usr/bin/env bash
# The main command on a fresh Debian 12 machine (as root): installs what is missing, builds the
# release preset's fashion_mnist example and trains it.
#   bash scripts/train.sh                       # 3 epochs on /usr/share/datasets/fashion-mnist
#   bash scripts/train.sh --epochs 5 --data DIR # flags go to the example unchanged
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cmake --preset release
cmake --build --preset release --target fashion_mnist
exec build/release/examples/fashion_mnist/fashion_mnist "$@"
