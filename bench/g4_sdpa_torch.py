#!/usr/bin/env python3
"""G4_attention peer: PyTorch's scaled_dot_product_attention (flash backend) on the shapes of
bench/gpu/attention_gpu_bench.cpp, printed in its line format:

    G4 <case> <ms per call> ms <TFLOP/s> TFLOP/s          (flash backend: the peer of G4)
    G4cudnn <case> <ms per call> ms <TFLOP/s> TFLOP/s     (cuDNN's fused attention, when this
                                                          PyTorch and the device's cuDNN offer it)

B=8, H=16, T in {1024, 4096}, D in {64, 128}, causal and not, bf16; pass fwd (forward) and
fwdbwd (forward + backward of dQ, dK, dV). FLOPs: 4 B H T^2 D forward, halved when causal;
the backward counts 2.5 times the forward. Device time from CUDA events, median of 20 calls
after 5 warm-up calls. Run with python3 on a GPU machine with PyTorch >= 2.0.
"""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("g4_sdpa_torch.py: PyTorch is not installed", file=sys.stderr)
    sys.exit(0)

B, H = 8, 16


def flash_only():
    # PyTorch >= 2.3 has torch.nn.attention.sdpa_kernel; older versions the cuda.sdp_kernel context.
    try:
        from torch.nn.attention import sdpa_kernel, SDPBackend
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def cudnn_only():
    """cuDNN's SDPA backend (PyTorch >= 2.5), or None when this PyTorch has none."""
    try:
        from torch.nn.attention import sdpa_kernel, SDPBackend
        return sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
    except (ImportError, AttributeError):
        return None


def time_ms(fn, warmup=5, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    if not torch.cuda.is_available():
        print("g4_sdpa_torch.py: no GPU", file=sys.stderr)
        return
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda}")
    for T in (1024, 4096):
        for D in (64, 128):
            for causal in (False, True):
                q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                           for _ in range(3))
                up = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
                fwd_flops = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
                backends = [("G4", flash_only)]
                if cudnn_only() is not None:
                    backends.append(("G4cudnn", cudnn_only))
                for prefix, backend in backends:
                    with backend():
                        def fwd():
                            with torch.no_grad():
                                F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                        def fwdbwd():
                            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                            torch.autograd.grad(out, (q, k, v), up)

                        for name, fn, flops in (("fwd", fwd, fwd_flops), ("fwdbwd", fwdbwd, 3.5 * fwd_flops)):
                            case = f"G4_attention/bf16/T{T}/D{D}/{'causal' if causal else 'full'}/{name}"
                            try:
                                ms = time_ms(fn)
                            except RuntimeError as e:  # a backend that refuses this shape or device
                                print(f"# {prefix} {case}: unavailable: {str(e).splitlines()[0][:160]}")
                                continue
                            print(f"{prefix} {case} {ms:.3f} ms {flops / (ms * 1e-3) / 1e12:.2f} TFLOP/s")


if __name__ == "__main__":
    main()
