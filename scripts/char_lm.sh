#!/usr/bin/env bash
# The character-level language model on a fresh Debian 12 machine (as root): installs what is
# missing (the King James text comes from Debian's sword-text-kjv), builds the release preset's
# char_lm example and trains it.
#   bash scripts/char_lm.sh                      # small transformer, < 5 min on 2 CPU cores
#   bash scripts/char_lm.sh --model lstm         # the LSTM variant
#   bash scripts/char_lm.sh --preset full --device cuda   # the GPU-sized model
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cmake --preset release
cmake --build --preset release --target char_lm
exec build/release/examples/char_lm/char_lm "$@"
