#!/usr/bin/env bash
# Sets up, builds and runs one bundled example on a fresh Debian 12 machine (as root):
# installs the build dependencies (scripts/setup.sh), fetches the example's real data from
# Debian packages into .cache/data (scripts/fetch_data.sh), builds the release preset's target
# and runs it with the remaining arguments. docs/examples.md describes each example.
#   bash scripts/example.sh protein_pairs
#   bash scripts/example.sh rna_coding --epochs 5 --device cuda
#   bash scripts/example.sh price_cnn --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name=${1:-}
[[ -n $name ]] || { echo "usage: bash scripts/example.sh NAME [ARGS...]  (fashion_mnist, char_lm, protein_pairs, rna_coding, price_cnn, hier_text, translate, word2vec, gpt)" >&2; exit 2; }
shift
# The Debian packages each example's default data comes from.
case $name in
  fashion_mnist | char_lm) data=() ;;  # installed by setup.sh
  protein_pairs) data=(emboss-test r-bioc-rcpi) ;;
  rna_coding) data=(infernal r-cran-seqinr transdecoder) ;;
  price_cnn) data=(python-matplotlib-data) ;;
  hier_text) data=(wordnet-base) ;;
  translate) data=(trans-de-en) ;;
  word2vec) data=(dict-gcide) ;;
  gpt) data=(dict-gcide) ;;  # and the KJV, installed by setup.sh
  *) echo "example.sh: no example named '$name' (fashion_mnist, char_lm, protein_pairs, rna_coding, price_cnn, hier_text, translate, word2vec, gpt)" >&2; exit 2 ;;
esac
bash scripts/setup.sh
[[ ${#data[@]} -eq 0 ]] || bash scripts/fetch_data.sh "${data[@]}"
cmake --preset release
cmake --build --preset release --target "$name"
exec "build/release/examples/$name/$name" "$@"
