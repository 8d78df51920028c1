#!/usr/bin/env python3
"""G7_lstm_lm peer: a 2-layer LSTM language model training step in PyTorch (cuDNN's LSTM on a
GPU), f32 (no TF32) and bf16 autocast, eager; --compile adds torch.compile cases (WORKLOADS.md).
The model is the one bench/gpu/g6g7_bench.cpp builds in ember:

    Embedding(V, H), LSTM(H, H, 2 layers, batch-first), Linear(H, V); cross-entropy on f32
    logits; hidden 1024, T 128, batch 64, vocab 10000; AdamW(lr 1e-4, fused),
    zero_grad(set_to_none=True).

A step is forward, backward and optimizer step on one fixed random batch. Timed as the median
of --steps steps (CUDA events around each) after --warmup steps. The bf16 matmul ceiling
(8192^3 GEMM) is measured in the same run; MFU = model FLOP/s / that ceiling (also for f32),
with training FLOPs per token 3 (2 layers x 2 x 4H (H + H) + 2 H V). Peak memory is
torch.cuda.max_memory_allocated over the timed steps.

Prints one JSON line per case: {"bench": "G7_lstm_lm", "library": "torch", "mode": "eager", ...}
(scripts/gpu_report.py --e2e reads them).

  python3 bench/g7_lstm_torch.py                      # on the GPU machine
  python3 bench/g7_lstm_torch.py --device cpu --tiny  # a seconds-long check of the script
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("g7_lstm_torch.py: PyTorch is not installed", file=sys.stderr)
    sys.exit(0)


class LSTMLM(nn.Module):
    def __init__(self, V, H):
        super().__init__()
        self.emb = nn.Embedding(V, H)
        self.rnn = nn.LSTM(H, H, 2, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, idx, tgt):
        y, _ = self.rnn(self.emb(idx))
        return F.cross_entropy(self.head(y).float().reshape(-1, self.head.out_features), tgt.reshape(-1))


FULL = dict(V=10000, H=1024, T=128, B=64)
TINY = dict(V=500, H=64, T=16, B=4)


def flops_per_token(c):
    H, V = c["H"], c["V"]
    return 3.0 * (2 * 2 * 4 * H * (H + H) + 2 * H * V)


class Timer:
    """Device time per call: CUDA events on a GPU, a synchronised wall clock elsewhere."""

    def __init__(self, dev):
        self.cuda = dev.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            return s.elapsed_time(e)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def matmul_ceiling_tflops(dev, n, reps=10):
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    timer = Timer(dev)
    for _ in range(3):
        a @ b
    ms = statistics.median(timer(lambda: a @ b) for _ in range(reps))
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e12


def run_case(c, dev, amp, compile_, steps, warmup, ceiling, label):
    torch.manual_seed(0)
    model = LSTMLM(c["V"], c["H"]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    f = torch.compile(model) if compile_ else model
    B, T, V = c["B"], c["T"], c["V"]
    idx = torch.randint(0, V, (B, T), device=dev)
    tgt = torch.randint(0, V, (B, T), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = f(idx, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    timer = Timer(dev)
    t0 = time.time()
    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.time() - t0
    ms = statistics.median(timer(step) for _ in range(steps))
    tokens = B * T
    tps = tokens / (ms * 1e-3)
    tflops = flops_per_token(c) * tps / 1e12
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else None
    row = {"bench": "G7_lstm_lm", "library": "torch", "mode": "compile" if compile_ else "eager",
           "dtype": "bf16" if amp else "f32", "device": label, "batch": B, "seq": T, "tokens_per_step": tokens,
           "step_ms": round(ms, 4), "tokens_per_s": round(tps, 1), "tflops": round(tflops, 3),
           "ceiling_tflops": round(ceiling, 2), "mfu": round(tflops / ceiling, 4) if ceiling else None,
           "peak_mem_gib": round(peak, 3) if peak is not None else None, "warmup_s": round(warm_s, 2),
           "steps": steps}
    print(json.dumps(row), flush=True)
    del model, opt, f
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description="G7_lstm_lm in PyTorch: f32 and bf16 autocast, eager")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="hidden 64, T 16, batch 4, vocab 500 (a check of the script)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile cases")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 15; --tiny 3)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps (default 3)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("g7_lstm_torch.py: no GPU (use --device cpu --tiny to check the script)", file=sys.stderr)
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c = TINY if args.tiny else FULL
    steps = args.steps or (3 if args.tiny else 15)
    label = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"# {label} torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}",
          flush=True)
    ceiling = matmul_ceiling_tflops(dev, 256 if args.tiny else 8192)
    print(f"# bf16 matmul ceiling {ceiling:.1f} TFLOP/s", flush=True)
    for compile_ in (False, True) if args.compile else (False,):
        for amp in (False, True):
            try:
                run_case(c, dev, amp, compile_, steps, args.warmup, ceiling, label)
            except Exception as e:  # torch.compile needs a working compiler toolchain; say so, go on
                print(f"# G7_lstm_lm {'compile' if compile_ else 'eager'} {'bf16' if amp else 'f32'} failed: "
                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
