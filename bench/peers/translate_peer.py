#!/usr/bin/env python3
"""Confirms the translate example's BLEU with sacrebleu.

The example writes its test-set hypotheses and references (one sentence a line) with
`--write-hyp DIR`: src.txt, ref.txt, greedy.txt, beam.txt, baseline.txt and its own figures in
ember_bleu.txt. This script scores the same files with sacrebleu's corpus_bleu (its defaults:
BLEU-4, 13a tokenisation, exp smoothing, case-sensitive) and prints both figures side by side.

    build/release/examples/translate/translate --write-hyp /tmp/tr_hyp
    python3 bench/peers/translate_peer.py /tmp/tr_hyp

Exit status 1 when a figure differs from the example's by more than --tolerance (default 0.01
BLEU points).
"""
import argparse
import os
import sys

import sacrebleu
from sacrebleu.metrics import BLEU


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the folder written by translate --write-hyp")
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args()

    refs = read_lines(os.path.join(args.dir, "ref.txt"))
    ours = {}
    with open(os.path.join(args.dir, "ember_bleu.txt"), encoding="utf-8") as f:
        for line in f:
            name, value = line.split()
            ours[name] = float(value)

    # sacrebleu's defaults, as sacrebleu.corpus_bleu uses them; force=True only silences the
    # warning about "tokenized" periods: the example joins its output tokens with spaces, and 13a
    # splits the period off anyway, so the score is the same either way.
    metric = BLEU(force=True)
    print(f"sacrebleu {sacrebleu.__version__}; {len(refs)} test sentences from {args.dir}")
    worst = 0.0
    signature = None
    for name in ("greedy", "beam", "baseline"):
        path = os.path.join(args.dir, f"{name}.txt")
        if not os.path.exists(path):
            continue
        hyps = read_lines(path)
        if len(hyps) != len(refs):
            sys.exit(f"{path}: {len(hyps)} lines, ref.txt has {len(refs)}")
        score = metric.corpus_score(hyps, [refs])
        signature = metric.get_signature()
        diff = abs(score.score - ours[name])
        worst = max(worst, diff)
        print(f"{name:9s} ember {ours[name]:8.4f}   sacrebleu {score.score:8.4f}   difference {diff:.2e}   ({score})")
    print(f"signature: {signature}")
    if worst > args.tolerance:
        print(f"MISMATCH: a figure differs by {worst:.4f} BLEU (tolerance {args.tolerance})")
        return 1
    print(f"agree within {args.tolerance} BLEU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
