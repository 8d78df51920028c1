#!/usr/bin/env python3
"""Fails when a file of ember includes a header of a floor it may not stand on.

The floors and what each may include are written once, in FLOORS below (docs/architecture.md
draws the same picture). Every #include "..." of every file under include/, src/ and kernels/
is resolved to the file it names (include/ and src/ are the include roots; kernels/ includes
its own headers by bare name) and both files are mapped to a floor by the longest matching
path prefix. Standard and third-party headers (<...>) are not looked at.

Usage: check_layers.py [REPO_ROOT]     (exit 0: clean; 1: violations, one line each)
       check_layers.py --self-test     (a small tree with one upward include must be caught)
"""
import os
import re
import sys

# floor: (path prefixes, floors it may include besides itself). Lower floors first.
FLOORS = {
    # Tensor, Storage, Device, DType, Shape, Error, Generator (+ Philox), StateDict, the stand-in
    # device's allocator. Knows no op, no backend, no autograd.
    "core": (["include/ember/core/", "include/ember/fake.h", "src/core/"], []),
    # The vocabulary ops and backends share: each primitive's signature (prim/primitives.h), the
    # kernel table (prim/registry.h), elementwise functors, update math, argument records.
    "prim": (["include/ember/prim/", "src/prim/"], ["core"]),
    # Kernels: they register themselves in the table and only compute.
    "backend": (["src/cpu/", "src/cuda/", "kernels/", "include/ember/cpu.h", "include/ember/cuda.h"],
                ["core", "prim"]),
    # The autograd graph as ops record it: nodes, saved tensors, grad mode, anomaly flag.
    "graph": (["include/ember/autograd/node.h", "include/ember/autograd/grad_mode.h",
               "include/ember/autograd/anomaly.h", "src/autograd/node.cpp", "src/autograd/grad_mode.cpp"],
              ["core"]),
    # Every op: checks, dtype rules, allocation, the dispatcher, backward formulas.
    # (CUDA-graph capture sits here: it drives the backend and the op path's capture checks.)
    "ops": (["include/ember/ops/", "src/ops/", "include/ember/cuda_graph.h"], ["core", "prim", "backend", "graph"]),
    # Running the graph backward (the engine, gradient accumulation, gradcheck).
    "autograd": (["include/ember/autograd/", "src/autograd/"], ["core", "graph", "ops"]),
    # Processes: rank and world, collectives (MPI), the sampler.
    "dist": (["include/ember/dist.h", "src/dist/"], ["core", "prim", "backend", "graph", "ops", "autograd"]),
    # Users of the ops: modules, optimizers, checkpoints.
    "nn": (["include/ember/nn/", "src/nn/", "src/quant/"], ["core", "prim", "graph", "ops", "autograd", "dist"]),
    "optim": (["include/ember/optim/", "src/optim/"], ["core", "prim", "graph", "ops", "autograd"]),
    # Mixed precision: the GradScaler works on optimizers (autocast itself is an ops hook).
    "amp": (["include/ember/amp.h", "src/amp/"], ["core", "prim", "graph", "ops", "autograd", "optim", "dist"]),
    # (src/onnx/: the ONNX exporter, its own library target.)
    "io": (["include/ember/io/", "src/io/", "src/onnx/"], ["core", "graph", "ops", "autograd", "nn", "optim", "amp", "dist"]),
    # The profiler: an op observer with device timing.
    "profiler": (["include/ember/profiler.h", "src/profiler/"], ["core", "prim", "backend", "graph", "ops", "autograd"]),
    # The umbrella header.
    "umbrella": (["include/ember/ember.h"], ["core", "prim", "backend", "graph", "ops", "autograd", "nn",
                                             "optim", "amp", "dist", "io", "profiler"]),
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def floor_of(path):
    best, best_len = None, -1
    for name, (prefixes, _) in FLOORS.items():
        for p in prefixes:
            if path.startswith(p) and len(p) > best_len:
                best, best_len = name, len(p)
    return best


def resolve(root, includer, name):
    for cand in (os.path.join("include", name), os.path.join("src", name),
                 os.path.join(os.path.dirname(includer), name)):
        if os.path.isfile(os.path.join(root, cand)):
            return os.path.normpath(cand)
    return None


def check(root):
    problems, files = [], 0
    for top in ("include", "src", "kernels"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for n in sorted(names):
                if not n.endswith((".h", ".cpp", ".cu", ".cuh")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, n), root)
                mine = floor_of(rel)
                if mine is None:
                    problems.append(f"{rel}: in no floor (add its folder to FLOORS in scripts/check_layers.py)")
                    continue
                files += 1
                allowed = {mine, *FLOORS[mine][1]}
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    text = f.read()
                for m in INCLUDE.finditer(text):
                    target = resolve(root, rel, m.group(1))
                    if target is None:
                        continue  # generated or external
                    theirs = floor_of(target)
                    if theirs is not None and theirs not in allowed:
                        line = text.count("\n", 0, m.start()) + 1
                        problems.append(f"{rel}:{line}: {mine} includes {target} ({theirs}); "
                                        f"{mine} may include only {', '.join(sorted(allowed))}")
    return problems, files


def self_test():
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        tree = {
            "include/ember/core/tensor.h": "#pragma once\n",
            "src/ops/dispatch.h": '#include "ember/core/tensor.h"\n',
            "src/core/tensor.cpp": '#include "ember/core/tensor.h"\n\n#include "ops/dispatch.h"\n',
            "src/cpu/elementwise.cpp": '#include "prim/primitives.h"\n#include <vector>\n',
            "src/prim/primitives.h": '#include "ember/core/tensor.h"\n',
        }
        for rel, text in tree.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
                f.write(text)
        problems, _ = check(root)
    expected = ["src/core/tensor.cpp:2: core includes src/ops/dispatch.h (ops)"]
    ok = len(problems) == 1 and problems[0].startswith(expected[0])
    print("check_layers self-test:", "ok" if ok else f"FAILED, got {problems}")
    return 0 if ok else 1


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    problems, files = check(root)
    for p in problems:
        print(p)
    print(f"check_layers: {files} files, {len(problems)} violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
