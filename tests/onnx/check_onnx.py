"""Checks an ONNX file ember exported: onnx.checker (full check, shape inference included),
then onnxruntime on the sample inputs ember saved next to it, compared with ember's outputs.

    check_onnx.py MODEL.onnx SAMPLE.safetensors [--rtol 1e-5]

The sample holds "input.<name>" and "output.<name>" tensors (io::ExportOptions::sample_path).
Float outputs must satisfy |ort - ember| <= rtol * (|ember| + max|ember|) element-wise, i.e.
relative to the element and to the output's scale; integer and bool outputs must be equal.
Exit 0: match; 1: mismatch or invalid model; 77: numpy, onnx or onnxruntime missing (CTest
reports the check as skipped)."""
import argparse
import json
import struct
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32, "I64": np.int64,
          "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8}


def read_safetensors(path):
    """The safetensors format: an 8-byte little-endian header size, a JSON header, the data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("sample")
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}
    print(f"{a.model}: onnx.checker OK (IR {model.ir_version}, opset {opset.get('', '?')}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers)")

    sample = read_safetensors(a.sample)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: sample["input." + i.name] for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, feeds)
    ok = True
    for name, g in zip(names, got):
        want = sample["output." + name]
        if g.shape != want.shape:
            print(f"  {name}: shape {g.shape} != ember's {want.shape}")
            ok = False
            continue
        if np.issubdtype(want.dtype, np.floating):
            w = want.astype(np.float64)
            d = np.abs(g.astype(np.float64) - w)
            scale = np.max(np.abs(w)) if w.size else 0.0
            bound = a.rtol * (np.abs(w) + scale)
            worst = float(np.max(d / np.maximum(np.abs(w) + scale, 1e-30))) if w.size else 0.0
            good = bool(np.all(d <= bound)) and not np.any(np.isnan(g) != np.isnan(w))
            print(f"  {name}: {tuple(want.shape)} max |diff| {float(np.max(d)) if d.size else 0:.3g}, "
                  f"relative {worst:.3g} (limit {a.rtol:g}) {'OK' if good else 'MISMATCH'}")
        else:
            good = np.array_equal(g, want)
            print(f"  {name}: {tuple(want.shape)} {want.dtype} {'equal' if good else 'DIFFERENT'}")
        ok = ok and good
    ok = check_dynamic(sess, model, feeds, dict(zip(names, got)), a.rtol) and ok
    sys.exit(0 if ok else 1)


def check_dynamic(sess, model, feeds, base, rtol):
    """Each symbolic axis grown by 2 (elements repeated from the start): the model must run and
    give outputs of the new size there; for an axis named like "batch" the first rows must equal
    the outputs at the example size (each batch row is computed on its own)."""
    axes = {}  # symbol -> [(input, axis)]
    for i in model.graph.input:
        for k, d in enumerate(i.type.tensor_type.shape.dim):
            if d.dim_param:
                axes.setdefault(d.dim_param, []).append((i.name, k))
    ok = True
    for sym, where in axes.items():
        grown = dict(feeds)
        n = feeds[where[0][0]].shape[where[0][1]]
        for name, k in where:
            grown[name] = np.take(grown[name], np.arange(n + 2) % n, axis=k)
        out = sess.run([o.name for o in sess.get_outputs()], grown)
        for o, g in zip(sess.get_outputs(), out):
            dims = model.graph.output
            decl = next(x for x in dims if x.name == o.name).type.tensor_type.shape.dim
            for k, d in enumerate(decl):
                if d.dim_param == sym and g.shape[k] != n + 2:
                    print(f"  {sym} grown to {n + 2}: output {o.name} has size {g.shape[k]} on axis {k}")
                    ok = False
            if "batch" in sym and g.ndim and g.shape[0] == n + 2 and base[o.name].shape[0] == n:
                w = base[o.name]
                if np.issubdtype(w.dtype, np.floating):
                    scale = np.max(np.abs(w)) if w.size else 0.0
                    good = bool(np.all(np.abs(g[:n] - w) <= rtol * (np.abs(w) + scale)))
                else:
                    good = np.array_equal(g[:n], w)
                if not good:
                    print(f"  {sym} grown to {n + 2}: output {o.name} rows 0..{n - 1} changed")
                    ok = False
        print(f"  dynamic axis {sym}: runs at size {n + 2} {'OK' if ok else 'MISMATCH'}")
    return ok


if __name__ == "__main__":
    main()
