#!/usr/bin/env python3
"""Peer for examples/hier_text: fastText's supervised classifier with loss='hs' on the exact
split the example trains on (hier_text --export-split DIR writes DIR/train.txt, valid.txt,
test.txt as `__label__<level1/level2/leaf> tokens...`, the texts cropped as ember sees them).

    build/ex-hier_text/examples/hier_text/hier_text --export-split /tmp/ht_split
    python3 bench/peers/hier_text_peer.py /tmp/ht_split [--epochs 8 --dim 256 --lr 0.5 --threads 2]

Prints leaf accuracy (precision@1 = accuracy, one label per line), level-1 and level-2
accuracy of the predicted label, and the train / test wall times. Runs the given setting and,
unless --no-tuned, fastText's usual supervised setting for small data (more epochs, lr 1.0,
word bigrams) picked on valid.txt, so neither side is handicapped by ember's epoch count.
"""
import argparse
import sys
import time

import fasttext


def read(path):
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            lab, _, text = line.rstrip("\n").partition(" ")
            labels.append(lab[len("__label__"):])
            texts.append(text)
    return labels, texts


def evaluate(model, labels, texts):
    t0 = time.perf_counter()
    pred, _ = model.predict(texts, k=1)
    secs = time.perf_counter() - t0
    pred = [p[0][len("__label__"):] for p in pred]
    acc = [0.0, 0.0, 0.0]
    for p, t in zip(pred, labels):
        ps, ts = p.split("/"), t.split("/")
        for lvl in range(3):
            acc[lvl] += ps[: lvl + 1] == ts[: lvl + 1]
    return [a / len(labels) for a in acc], secs


def run(split, epochs, dim, lr, ngrams, threads):
    t0 = time.perf_counter()
    model = fasttext.train_supervised(input=f"{split}/train.txt", loss="hs", dim=dim, epoch=epochs, lr=lr,
                                      wordNgrams=ngrams, minCount=1, thread=threads, verbose=0)
    train_s = time.perf_counter() - t0
    vl, vt = read(f"{split}/valid.txt")
    tl, tt = read(f"{split}/test.txt")
    (_, _, val), _ = evaluate(model, vl, vt)
    acc, test_s = evaluate(model, tl, tt)
    return dict(epochs=epochs, dim=dim, lr=lr, ngrams=ngrams, val=val, leaf=acc[2], level1=acc[0], level2=acc[1],
                train_s=train_s, test_s=test_s, n_test=len(tl), n_labels=len(model.get_labels()))


def show(tag, r):
    print(f"fastText {tag}: loss=hs dim={r['dim']} epoch={r['epochs']} lr={r['lr']} wordNgrams={r['ngrams']}: "
          f"{r['n_labels']} labels; valid leaf {100 * r['val']:.2f}%; test leaf {100 * r['leaf']:.2f}% "
          f"level 1 {100 * r['level1']:.2f}% level 2 {100 * r['level2']:.2f}%; train {r['train_s']:.2f} s, "
          f"test {r['test_s']:.3f} s ({1e3 * r['test_s'] / r['n_test']:.4f} ms/text)")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tuned", action="store_true")
    a = ap.parse_args()
    print(f"fasttext {getattr(fasttext, '__version__', '(fasttext-wheel)')}, python {sys.version.split()[0]}")
    same = run(a.split, a.epochs, a.dim, a.lr, 1, a.threads)
    show("same epochs", same)
    best = same
    if not a.no_tuned:
        for epochs, lr, ngrams in [(25, 1.0, 1), (25, 1.0, 2), (50, 1.0, 2)]:
            r = run(a.split, epochs, a.dim, lr, ngrams, a.threads)
            show("tuning", r)
            if r["val"] > best["val"]:
                best = r
        show("best on valid", best)
    print(f"peer: fasttext_leaf_accuracy={best['leaf']:.4f} fasttext_level1_accuracy={best['level1']:.4f} "
          f"fasttext_train_s={best['train_s']:.2f} fasttext_same_epochs_leaf_accuracy={same['leaf']:.4f}")


if __name__ == "__main__":
    main()
