#!/usr/bin/env bash
# The main command on a fresh Debian 12 machine (as root): sets up, builds and trains the
# fashion_mnist example (an alias of `bash scripts/example.sh fashion_mnist`).
#   bash scripts/train.sh                       # 3 epochs on /usr/share/datasets/fashion-mnist
#   bash scripts/train.sh --epochs 5 --data DIR # flags go to the example unchanged
exec bash "$(dirname "${BASH_SOURCE[0]}")/example.sh" fashion_mnist "$@"
