#!/usr/bin/env python3
"""Fails unless every row of the op table (include/ember/ops/op_def.h, EMBER_OPS) is the op of
some function that opens the op path: `OpId::<name>` must appear in a source file under src/
(an `OpScope scope(OpId::<name>, ...)`, or a family helper that opens the scope for the id it is
given, like unary_float), so that no op the table names is invisible to autocast and the
observers.

Usage: check_op_table.py [REPO_ROOT]   (exit 0: every row used; 1: the unused rows, one per line)
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
table = open(os.path.join(root, "include/ember/ops/op_def.h")).read()
body = table[table.index("#define EMBER_OPS(X)"):table.index("enum class OpId")]
rows = re.findall(r"X\((\w+), (keep|lower|f32|widest)\)", body)
used = set()
for base, _, files in os.walk(os.path.join(root, "src")):
    for f in files:
        if f.endswith((".cpp", ".h")):
            if f not in ("op_call.h", "op_call.cpp"):
                used.update(re.findall(r"OpId::(\w+)", open(os.path.join(base, f)).read()))
missing = [name for name, _ in rows if name not in used]
if not rows:
    print("check_op_table: no rows found in EMBER_OPS")
    sys.exit(1)
for m in missing:
    print(f"op table row '{m}' is not used by any op under src/")
print(f"check_op_table: {len(rows)} rows, {len(rows) - len(missing)} used")
sys.exit(1 if missing else 0)
