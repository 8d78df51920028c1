#!/usr/bin/env python3
"""Peers of the word2vec example: fastText skip-gram (loss='hs') and gensim Word2Vec(sg=1, hs=1,
negative=0), trained on exactly the tokens the ember example trains on, with the same dimension,
window, epochs, min-count, subsampling, start learning rate and 2 threads; each scored on the
example's analogy set by one 3CosAdd routine (this file), and timed the same way.

words/s = in-vocabulary tokens of the corpus (count >= min-count, before subsampling) x epochs,
divided by the wall time of the training call. ember's figure is the one its result line prints
(the same count over its training loop; its vectors are scored here too).

  python3 bench/peers/word2vec_peer.py [--limit 3000000] [--epochs 5] [--repeat 1]
"""
import argparse
import collections
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_analogies(path):
    qs = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(":"):
            continue
        qs.append(line.lower().split())
    return qs


def analogy_accuracy(words, vecs, qs):
    """3CosAdd over the whole vocabulary, a, b, c excluded; OOV questions skipped."""
    index = {w: i for i, w in enumerate(words)}
    n = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
    correct = answered = 0
    for a, b, c, d in qs:
        if not all(w in index for w in (a, b, c, d)):
            continue
        t = n[index[b]] - n[index[a]] + n[index[c]]
        s = n @ t
        s[[index[a], index[b], index[c]]] = -np.inf
        answered += 1
        correct += int(np.argmax(s) == index[d])
    return correct / max(answered, 1), correct, answered


def read_w2v_text(path):
    with open(path, encoding="utf-8") as f:
        v, d = map(int, f.readline().split())
        words, rows = [], []
        for line in f:
            p = line.rstrip("\n").split(" ")
            assert len(p) == d + 1, "bad vector line"
            words.append(p[0])
            rows.append(np.array(p[1:], dtype=np.float32))
    assert len(words) == v
    return words, np.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", default=os.path.join(ROOT, "build/ex-word2vec/examples/word2vec/word2vec"))
    ap.add_argument("--limit", type=int, default=3000000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--sample", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (interleaved); the best words/s is kept")
    ap.add_argument("--analogies", default=os.path.join(ROOT, "examples/word2vec/analogies.txt"))
    ap.add_argument("--workdir", default="/tmp/word2vec_peer")
    ap.add_argument("--subwords", action="store_true", help="fastText with its default char n-grams (minn 3, maxn 6)")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    corpus = os.path.join(args.workdir, "corpus.txt")
    qs = read_analogies(args.analogies)

    subprocess.run([args.exe, "--export-corpus", corpus, "--limit", str(args.limit), "--checkpoint", ""], check=True)
    counts = collections.Counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            counts.update(line.split())
    train_tokens = sum(c for c in counts.values() if c >= args.min_count)
    vocab = sum(1 for c in counts.values() if c >= args.min_count)
    print(f"corpus {corpus}: {sum(counts.values())} tokens, {train_tokens} in the vocabulary of {vocab} words")

    import fasttext
    import gensim
    from gensim.models import Word2Vec

    results = collections.defaultdict(list)
    for rep in range(args.repeat):
        # ember (its own timing of the training loop; vectors scored here)
        vec_path = os.path.join(args.workdir, "ember.vec")
        cmd = [args.exe, "--limit", str(args.limit), "--dim", str(args.dim), "--window", str(args.window),
               "--epochs", str(args.epochs), "--min-count", str(args.min_count), "--sample", str(args.sample),
               "--lr", str(args.lr), "--threads", str(args.threads), "--checkpoint", "", "--save-vectors", vec_path]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
        wps = float(re.search(r"words_per_s=([0-9.e+]+)", out).group(1))
        cpu_wps = float(re.search(r"; ([0-9]+) words per CPU second", out).group(1))
        words, vecs = read_w2v_text(vec_path)
        acc = analogy_accuracy(words, vecs, qs)
        results["ember"].append((wps, acc, wall, cpu_wps))
        print(f"[{rep}] ember     {wps:10.0f} words/s  {cpu_wps:10.0f} per CPU-s  analogy {acc[0]:.4f} "
              f"({acc[1]}/{acc[2]})  process wall {wall:.1f} s")
        print("    " + " ".join(cmd))

        # fastText: word2vec's model when maxn = 0 (no character n-grams)
        extra = {} if args.subwords else {"minn": 0, "maxn": 0}
        u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
        t0 = time.perf_counter()
        m = fasttext.train_unsupervised(corpus, model="skipgram", loss="hs", dim=args.dim, ws=args.window,
                                        epoch=args.epochs, minCount=args.min_count, t=args.sample, lr=args.lr,
                                        thread=args.threads, verbose=0, **extra)
        sec = time.perf_counter() - t0
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime - u0
        ws = [w for w in m.words if w != "</s>"]
        acc = analogy_accuracy(ws, np.stack([m.get_word_vector(w) for w in ws]), qs)
        wps = train_tokens * args.epochs / sec
        cpu_wps = train_tokens * args.epochs / cpu
        results["fasttext"].append((wps, acc, sec, cpu_wps))
        print(f"[{rep}] fastText  {wps:10.0f} words/s  {cpu_wps:10.0f} per CPU-s  analogy {acc[0]:.4f} ({acc[1]}/{acc[2]})  train {sec:.1f} s")

        # gensim: corpus_file mode (its fastest: C threads without the GIL)
        g = Word2Vec(sg=1, hs=1, negative=0, vector_size=args.dim, window=args.window, epochs=args.epochs,
                     min_count=args.min_count, sample=args.sample, alpha=args.lr, workers=args.threads, seed=1)
        g.build_vocab(corpus_file=corpus)
        u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
        t0 = time.perf_counter()
        g.train(corpus_file=corpus, total_words=g.corpus_total_words, total_examples=g.corpus_count,
                epochs=args.epochs)
        sec = time.perf_counter() - t0
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime - u0
        acc = analogy_accuracy(list(g.wv.index_to_key), g.wv.vectors, qs)
        wps = train_tokens * args.epochs / sec
        cpu_wps = train_tokens * args.epochs / cpu
        results["gensim"].append((wps, acc, sec, cpu_wps))
        print(f"[{rep}] gensim    {wps:10.0f} words/s  {cpu_wps:10.0f} per CPU-s  analogy {acc[0]:.4f} ({acc[1]}/{acc[2]})  train {sec:.1f} s")

    print(f"\nversions: fasttext-wheel {getattr(fasttext, '__version__', '0.9.2')}, gensim {gensim.__version__}, "
          f"numpy {np.__version__}, python {sys.version.split()[0]}")
    print(f"settings: dim {args.dim}, window {args.window}, epochs {args.epochs}, min-count {args.min_count}, "
          f"sample {args.sample}, lr {args.lr}, threads {args.threads}, limit {args.limit} tokens")
    best = {}
    for name, rs in results.items():
        wps, acc, _, cpu_wps = max(rs, key=lambda r: r[0])
        best[name] = (wps, cpu_wps)
        print(f"{name:9s} best words/s {wps:10.0f}  (that run: {cpu_wps:.0f} words per CPU second)  "
              f"analogy accuracy {acc[0]:.4f} ({acc[1]}/{acc[2]})")
    peer = max(best["fasttext"][0], best["gensim"][0])
    peer_cpu = max(best["fasttext"][1], best["gensim"][1])
    print(f"ember / faster peer: words/s {best['ember'][0] / peer:.2f}x, words per CPU second "
          f"{best['ember'][1] / peer_cpu:.2f}x")


if __name__ == "__main__":
    main()
