#!/usr/bin/env python3
"""G6_gpt peer: a GPT-2-small training step in PyTorch, eager and torch.compile, bf16 autocast
(WORKLOADS.md). The model is the one ember's examples/gpt/model.h builds (same parameter names):

    wte + wpe, 12 pre-norm blocks (LayerNorm, qkv Linear d->3d, causal SDPA, proj Linear d->d,
    LayerNorm, fc Linear d->4d, GELU tanh, out Linear 4d->d), final LayerNorm, head tied to wte;
    d 768, 12 heads, T 1024, batch 8, vocab 50304; cross-entropy on f32 logits;
    AdamW(lr 1e-4, fused), zero_grad(set_to_none=True).

A step is forward, backward and optimizer step on one fixed random batch. Timed as the median
of --steps steps (CUDA events around each) after --warmup steps; torch.compile's compilation
happens in the warm-up. The bf16 matmul ceiling (8192^3 GEMM, median of 10) is measured in the
same run; MFU = model FLOP/s / that ceiling, with the model's training FLOPs per token
6 (12 L d^2 + V d) + 6 L T d (causal attention: half the keys). Peak memory is
torch.cuda.max_memory_allocated over the timed steps.

Prints one JSON line per case (and a comment line naming the device):
  {"bench": "G6_gpt", "library": "torch", "mode": "eager"|"compile", "dtype": "bf16"|"f32", ...}
scripts/gpu_report.py reads them (--e2e). Cases: --cases eager,compile (default both, bf16);
--f32 adds the f32 eager case (no TF32).

  python3 bench/g6_gpt_torch.py                      # on the GPU machine
  python3 bench/g6_gpt_torch.py --device cpu --tiny  # a seconds-long check of the script
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
    print("g6_gpt_torch.py: PyTorch is not installed", file=sys.stderr)
    sys.exit(0)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = [t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v)]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, L, d, h):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, d), nn.Embedding(T, d)
        self.blocks = nn.ModuleList([Block(d, h) for _ in range(L)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        self.head.weight = self.wte.weight  # tied

    def forward(self, idx, tgt):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return F.cross_entropy(self.head(self.ln(x)).float().view(-1, self.head.out_features), tgt.view(-1))


FULL = dict(V=50304, T=1024, L=12, d=768, h=12, B=8)
TINY = dict(V=512, T=64, L=2, d=64, h=2, B=2)


def flops_per_token(c):
    return 6.0 * (12 * c["L"] * c["d"] ** 2 + c["V"] * c["d"]) + 6.0 * c["L"] * c["T"] * c["d"]


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
    model = GPT(c["V"], c["T"], c["L"], c["d"], c["h"]).to(dev)
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
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
    times = [timer(step) for _ in range(steps)]
    ms = statistics.median(times)
    tokens = B * T
    tps = tokens / (ms * 1e-3)
    tflops = flops_per_token(c) * tps / 1e12
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else None
    row = {"bench": "G6_gpt", "library": "torch", "mode": "compile" if compile_ else "eager",
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
    ap = argparse.ArgumentParser(description="G6_gpt in PyTorch: eager and torch.compile, bf16 autocast")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer d-64 model at T 64, batch 2 (a check of the script)")
    ap.add_argument("--cases", default="eager,compile", help="comma list of eager, compile (default both)")
    ap.add_argument("--f32", action="store_true", help="also the f32 eager case (no TF32)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 15; --tiny 3)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps (default 3)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("g6_gpt_torch.py: no GPU (use --device cpu --tiny to check the script)", file=sys.stderr)
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c = TINY if args.tiny else FULL
    steps = args.steps or (3 if args.tiny else 15)
    label = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"# {label} torch {torch.__version__} cuda {torch.version.cuda}", flush=True)
    ceiling = matmul_ceiling_tflops(dev, 256 if args.tiny else 8192)
    print(f"# bf16 matmul ceiling {ceiling:.1f} TFLOP/s", flush=True)
    cases = [x.strip() for x in args.cases.split(",") if x.strip()]
    for case in cases:
        if case not in ("eager", "compile"):
            ap.error(f"--cases: unknown case {case!r} (eager, compile)")
    if args.f32:
        run_case(c, dev, False, False, steps, args.warmup, ceiling, label)
    for case in cases:
        try:
            run_case(c, dev, True, case == "compile", steps, args.warmup, ceiling, label)
        except Exception as e:  # torch.compile needs a working compiler toolchain; say so, go on
            print(f"# G6_gpt {case} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
