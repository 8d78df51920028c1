#!/usr/bin/env bash
# Writes a small own-data input for the protein_pairs CTest from the fetched Debian data:
# OUT/own.fasta (40 globins g1..g40 and 40 extracellular proteins e1..e40) and OUT/own_pairs.tsv
# (every pair of them, label 1 when both come from the same file).
#   bash make_own_data.sh DATA_ROOT OUT
set -euo pipefail
root=$1
out=$2
mkdir -p "$out"
take() {  # take FILE TAG: the first 40 records, renamed TAG1..TAG40
  awk -v tag="$2" '/^>/ { if (++n > 40) exit; print ">" tag n; next } { print }' "$1"
}
{
  take "$root/emboss-test/usr/share/EMBOSS/test/data/hmm/globins630.fa" g
  take "$root/r-bioc-rcpi/usr/lib/R/site-library/Rcpi/vignettedata/extracell.fasta" e
} >"$out/own.fasta"
awk 'BEGIN {
  print "# idA\tidB\tlabel (1: same source file)"
  for (i = 1; i <= 80; i++) for (j = i + 1; j <= 80; j++) {
    a = (i <= 40 ? "g" i : "e" (i - 40)); b = (j <= 40 ? "g" j : "e" (j - 40))
    print a "\t" b "\t" ((i <= 40) == (j <= 40) ? 1 : 0)
  }
}' >"$out/own_pairs.tsv"
