#!/usr/bin/env bash
# The character-level language model on a fresh Debian 12 machine (as root), an alias of
# `bash scripts/example.sh char_lm` (the King James text comes from Debian's sword-text-kjv).
#   bash scripts/char_lm.sh                      # small transformer, < 5 min on 2 CPU cores
#   bash scripts/char_lm.sh --model lstm         # the LSTM variant
#   bash scripts/char_lm.sh --preset full --device cuda   # the GPU-sized model
exec bash "$(dirname "${BASH_SOURCE[0]}")/example.sh" char_lm "$@"
