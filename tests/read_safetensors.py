"""Reads a .safetensors file written by ember with the reference `safetensors` package and
checks the values ember's test wrote: exits 0 on a match, 1 on a mismatch, 77 when the
package is missing (the C++ test then reports the check as skipped)."""
import sys

try:
    import numpy as np
    from safetensors.numpy import load_file
    from safetensors import safe_open
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

path = sys.argv[1]
t = load_file(path)
expect = {
    "weight": (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 4,
    "counts": np.array([7, -3, 2**40], dtype=np.int64),
    "half": np.array([1.5, -2.25, 0.125], dtype=np.float16),
}
for name, want in expect.items():
    got = t[name]
    if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
        print(f"mismatch in {name}: got {got.dtype} {got.shape} {got}, want {want.dtype} {want.shape} {want}")
        sys.exit(1)
with safe_open(path, framework="numpy") as f:
    if f.metadata().get("step") != "42":
        print(f"metadata mismatch: {f.metadata()}")
        sys.exit(1)
print("python safetensors read ember's file: OK")
