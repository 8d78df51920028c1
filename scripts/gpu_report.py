#!/usr/bin/env python3
"""Turns the raw outputs of a GPU run into docs/perf/gpu-<device>.md and .json.

    gpu_report.py --bench FILE... [--sdpa FILE] [--e2e FILE...] [--tests FILE] [--examples FILE...]
                  [--memcheck FILE...] [--steps FILE] --device NAME --driver V --cuda V
                  --commit SHA [--date D] [--json OUT] [--md OUT]
    gpu_report.py --self-test DIR      (the CTest ember.gpu_report: DIR = bench/fixtures)

scripts/device-check.sh --quick calls it; it can also be run by hand on kept logs. Python 3
standard library only.

Inputs (each file may hold several runs, one after the other):
  --bench     Google Benchmark output of the GPU bench binaries, console format or the JSON of
              --benchmark_out (told apart by the first character; a torn JSON file, left by a
              binary that died, is skipped with a warning). Cases are named
              <workload>/.../<library>[/manual_time]; library is ember, cublas, cublas_tf32 or
              cudnn, or absent (G4_attention: ember only).
  --sdpa      bench/g4_sdpa_torch.py's lines "G4 <case> <ms> ms <TFLOP/s> TFLOP/s" (the peer of G4).
  --e2e       JSON lines of the end-to-end training steps (G6_gpt, G7_lstm_lm): ember's
              ember-g6g7_bench and the PyTorch peers bench/g6_gpt_torch.py, bench/g7_lstm_torch.py,
              {"bench", "library" (ember|torch), "mode" (eager|compile), "dtype", "step_ms",
              "tokens_per_s", "mfu", "peak_mem_gib", ...}; other lines are ignored, the last line of a
              case wins.
  --tests     doctest output of the whole test binary; its last "[doctest] test cases:" line.
  --examples  the examples' output, blocks that start with "### <command>" and may end with
              "--> rc=N"; the last lines that matter (accuracy, held-out loss, error) are kept.
  --memcheck  compute-sanitizer output ("### <command>" blocks, "ERROR SUMMARY: N errors").
  --steps     device-check.sh's step table: one "name<TAB>status<TAB>detail" line per step.

The JSON (read by outside checks; its shape is fixed):
  {"device", "driver", "cuda", "commit" (full sha), "date",
   "figures": [{"name", "ember", "peer", "peer_name", "unit", "ratio"}],
   "tests": {"cases", "passed", "failed", "skipped"}}
Every figure is a time in ms. ratio = ember / peer (below 1: ember is faster), rounded to 3
decimals from the values as written. A figure without a peer has peer, peer_name and ratio
null (every figure has all six keys). tests holds nulls when no doctest summary was found.
Figures are named G<n>_<family>/<dtype>/<shape...> (WORKLOADS.md): the bench case's name
without its library part, and G5's cases get their dtype (f32). Pairs:
  G1_gemm/<dt>/<shape>           ember vs cublas (the true-f32 one for f32; TF32 only in the md)
  G2_conv1d, G3_lstm             ember vs cudnn, case by case
  G4_attention/...               ember vs PyTorch SDPA (flash), from --sdpa
  G5_softmax/f32/logsoftmax_nll  ember's fused log-softmax + NLL vs cuDNN's log-softmax alone
  G5_softmax/f32/hsoftmax_train  ember's hierarchical softmax vs ember's full softmax step
  G5_softmax/f32/full_train      no peer
  G6_gpt/bf16/vs_eager           ember's G6 step (bf16 autocast) vs PyTorch eager, from --e2e
  G6_gpt/bf16/vs_compile         the same ember step vs torch.compile
  G7_lstm_lm/bf16, G7_lstm_lm/f32  ember's G7 step vs PyTorch eager (cuDNN's LSTM)
  (a step is the same number of tokens on both sides, so the ratio is also time per token.)
The memory-bound cases (mem/...) are not G workloads: they appear in the md only.
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile

LIBRARIES = ("ember", "cublas", "cublas_tf32", "cudnn")
PEER_LIBRARIES = ("cublas", "cudnn")  # the peer of an ember case with the same base name
# ember case base -> (peer case base and library, peer_name) where the pair is not by name.
SPECIAL_PEERS = {
    "G5_softmax/logsoftmax_nll": (("G5_softmax/logsoftmax", "cudnn"), "cudnn_logsoftmax"),
    "G5_softmax/hsoftmax_train": (("G5_softmax/full_train", "ember"), "ember_full_softmax"),
}
SDPA_PEER = "torch_sdpa_flash"
UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}
FIGURE_KEYS = ["name", "ember", "peer", "peer_name", "unit", "ratio"]
TOP_KEYS = ["device", "driver", "cuda", "commit", "date", "figures", "tests"]
TEST_KEYS = ["cases", "passed", "failed", "skipped"]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def si_number(text):
    """'4.05377k' -> 4053.77; '1076.18n' -> 1.07618e-06; None when it is no number."""
    m = re.fullmatch(r"([-+]?[0-9.]+(?:[eE][-+]?\d+)?)([kMGTmunp]?)", text)
    if not m:
        return None
    return float(m.group(1)) * SI.get(m.group(2), 1.0)


def sig(x, digits=4):
    """x rounded to `digits` significant digits (a float, for the JSON)."""
    if x is None or x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


# ---- Google Benchmark ----------------------------------------------------------------------

def split_case(name):
    """'G1_gemm/bf16/square_1024/cublas/manual_time' -> ('G1_gemm/bf16/square_1024', 'cublas')."""
    parts = name.split("/")
    if parts and parts[-1] in ("manual_time", "real_time"):
        parts = parts[:-1]
    if parts and parts[-1] in LIBRARIES:
        return "/".join(parts[:-1]), parts[-1]
    return "/".join(parts), "ember"


CONSOLE_ROW = re.compile(r"^(\S+)\s+([0-9.]+) (ns|us|ms|s)\s+([0-9.]+) (ns|us|ms|s)\s+(\d+)(.*)$")
CONSOLE_ERROR = re.compile(r"^(\S+)\s+ERROR OCCURRED: '(.*)'")
G4_LINE = re.compile(r"^G4 (\S+) ([0-9.]+) ms ([0-9.]+) TFLOP/s")
G4_CUDNN_LINE = re.compile(r"^G4cudnn (\S+) ([0-9.]+) ms ([0-9.]+) TFLOP/s")
CONTEXT_LINE = re.compile(r"^([A-Za-z_]+): (.+)$")


def parse_console(text, cases, context):
    in_header, g4_lines = True, {}
    for line in text.splitlines():
        line = line.rstrip()
        if line.startswith("---") or line.startswith("Benchmark "):
            in_header = False
            continue
        if line.startswith("### ") or line.startswith("Running "):
            in_header = True
            continue
        if in_header:
            m = CONTEXT_LINE.match(line)
            if m:
                context.setdefault(m.group(1), m.group(2).strip())
            elif re.match(r"^\d{4}-\d\d-\d\dT", line):
                context.setdefault("date", line.strip())
            continue
        m = G4_LINE.match(line)
        if m:  # ember's attention bench repeats its cases with more digits; the last run's line wins
            g4_lines[m.group(1)] = float(m.group(2))
            continue
        m = CONSOLE_ERROR.match(line)
        if m:
            base, lib = split_case(m.group(1))
            cases[(base, lib)] = {"error": m.group(2)}
            continue
        m = CONSOLE_ROW.match(line)
        if not m:
            continue
        base, lib = split_case(m.group(1))
        counters = {}
        for token in m.group(7).split():
            if "=" in token:
                key, _, value = token.partition("=")
                number = si_number(value)
                if number is not None:
                    counters[key] = number
        cases[(base, lib)] = {"ms": float(m.group(2)) * UNIT_MS[m.group(3)], "counters": counters}
    for base, ms in g4_lines.items():
        if "ms" in cases.get((base, "ember"), {}):
            cases[(base, "ember")]["ms"] = ms


def parse_bench_json(text, cases, context):
    doc = json.loads(text)
    for key, value in doc.get("context", {}).items():
        if isinstance(value, str):
            context.setdefault(key, value)
    medians = set()
    for b in doc.get("benchmarks", []):
        base, lib = split_case(b.get("run_name") or b["name"])
        if b.get("error_occurred"):
            cases[(base, lib)] = {"error": b.get("error_message", "error")}
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if (base, lib) in medians:
            continue  # a median aggregate wins over the single repetitions
        if b.get("run_type") == "aggregate":
            medians.add((base, lib))
        skip = {"name", "run_name", "run_type", "family_index", "per_family_instance_index", "repetitions",
                "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit",
                "aggregate_name", "aggregate_unit", "label"}
        counters = {k: float(v) for k, v in b.items() if k not in skip and isinstance(v, (int, float))}
        ms = float(b["real_time"]) * UNIT_MS.get(b.get("time_unit", "ns"), 1e-6)
        cases[(base, lib)] = {"ms": ms, "counters": counters}


def parse_bench_files(paths):
    cases, context = {}, {}
    for path in paths:
        text = read(path)
        if text.lstrip().startswith("{"):
            try:
                parse_bench_json(text, cases, context)
            except (ValueError, KeyError, TypeError) as e:  # a binary that died mid-run leaves a torn file
                print(f"gpu_report: warning: {path}: not usable JSON ({e}); its console output counts", file=sys.stderr)
        else:
            parse_console(text, cases, context)
    return cases, context


def parse_sdpa(paths, pattern=G4_LINE):
    """PyTorch SDPA lines -> {case: (ms, TFLOP/s)}; the last line of a case wins. The flash
    backend's lines (G4_LINE) are G4's peer; cuDNN's (G4_CUDNN_LINE) only an extra md table."""
    out = {}
    for path in paths:
        for line in read(path).splitlines():
            m = pattern.match(line)
            if m:
                out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


# ---- end-to-end training steps (G6, G7) --------------------------------------------------------

# figure name -> (bench, dtype, peer mode, peer_name)
E2E_FIGURES = [
    ("G6_gpt/bf16/vs_eager", "G6_gpt", "bf16", "eager", "torch_eager"),
    ("G6_gpt/bf16/vs_compile", "G6_gpt", "bf16", "compile", "torch_compile"),
    ("G7_lstm_lm/bf16", "G7_lstm_lm", "bf16", "eager", "torch_cudnn"),
    ("G7_lstm_lm/f32", "G7_lstm_lm", "f32", "eager", "torch_cudnn"),
]


def parse_e2e(paths):
    """JSON lines -> {(bench, library, mode, dtype): row}; the last line of a case wins."""
    out = {}
    for path in paths:
        for line in read(path).splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step_ms"), (int, float)):
                continue
            key = (row.get("bench"), row.get("library"), row.get("mode", "eager"), row.get("dtype"))
            out[key] = row
    return out


def e2e_figures(e2e):
    """The G6/G7 figures (JSON) and their md rows."""
    figures, rows = [], []
    for name, bench, dtype, peer_mode, peer_name in E2E_FIGURES:
        mine = e2e.get((bench, "ember", "eager", dtype))
        peer = e2e.get((bench, "torch", peer_mode, dtype))
        if mine is None and peer is None:
            continue
        rows.append({"name": name, "ember": mine, "peer": peer, "peer_name": peer_name})
        if mine is None:
            continue
        ember = sig(float(mine["step_ms"]))
        p = sig(float(peer["step_ms"])) if peer else None
        figures.append({"name": name, "ember": ember, "peer": p, "peer_name": peer_name if p else None,
                        "unit": "ms", "ratio": round(ember / p, 3) if p else None})
    return figures, rows


def figure_name(base):
    if base.startswith("G5_softmax/") and base.split("/")[1] not in ("f32", "bf16", "f16"):
        return base.replace("G5_softmax/", "G5_softmax/f32/", 1)
    return base


def build_figures(cases, sdpa):
    """The JSON figures, by workload (G1, G2, ...) and in the benches' order within one, plus the
    rows of the md tables."""
    def workload(item):
        m = re.match(r"^G(\d+)_", item[0][0])
        return int(m.group(1)) if m else 99

    figures, rows = [], []
    for (base, lib), case in sorted(cases.items(), key=workload):
        if lib != "ember" or not re.match(r"^G\d+_", base):
            continue
        peer = peer_name = None
        peer_case = None
        if base in SPECIAL_PEERS:
            key, peer_name = SPECIAL_PEERS[base]
            peer_case = cases.get(key)
        elif base.startswith("G4_"):
            if base in sdpa:
                peer_case = {"ms": sdpa[base][0], "counters": {"TFLOP/s": sdpa[base][1]}}
                peer_name = SDPA_PEER
        else:
            for p in PEER_LIBRARIES:
                if (base, p) in cases:
                    peer_case, peer_name = cases[(base, p)], p
                    break
        if peer_case is not None and "ms" in peer_case:
            peer = sig(peer_case["ms"])
        else:
            peer_name = None
        row = {"name": figure_name(base), "case": case, "peer_case": peer_case if peer is not None else None,
               "peer_name": peer_name}
        rows.append(row)
        if "ms" not in case:
            continue  # an errored case: in the md, not in the JSON
        ember = sig(case["ms"])
        ratio = round(ember / peer, 3) if peer else None
        figures.append({"name": figure_name(base), "ember": ember, "peer": peer,
                        "peer_name": peer_name if peer is not None else None, "unit": "ms", "ratio": ratio})
    return figures, rows


# ---- tests, examples, memcheck ---------------------------------------------------------------

SUMMARY = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed\s*\|\s*(\d+) skipped")


def parse_tests(path):
    """(counts or None, failing cases as 'suite: case', assertion summary line)."""
    if not path or not os.path.exists(path):
        return None, [], ""
    text = read(path)
    found = SUMMARY.findall(text)
    counts = None
    if found:
        counts = dict(zip(TEST_KEYS, (int(x) for x in found[-1])))
    failing, suite, case = [], "", ""
    for line in text.splitlines():
        if line.startswith("TEST SUITE:"):
            suite = line.split(":", 1)[1].strip()
        elif line.startswith("TEST CASE:"):
            case = line.split(":", 1)[1].strip()
        elif "ERROR:" in line and case:
            label = f"{suite or '(no suite)'}: {case}"
            if label not in failing:
                failing.append(label)
    asserts = re.findall(r"\[doctest\] assertions:.*", text)
    return counts, failing, asserts[-1].strip().rstrip("|").strip() if asserts else ""


def blocks(paths):
    """('### command' blocks) -> [(command, lines)]."""
    out = []
    for path in paths:
        cmd, lines = None, []
        for line in read(path).splitlines():
            if line.startswith("### "):
                if cmd is not None:
                    out.append((cmd, lines))
                cmd, lines = line[4:].strip(), []
            elif cmd is not None:
                lines.append(line)
        if cmd is not None:
            out.append((cmd, lines))
    return out


def parse_examples(paths):
    results = []
    keep = re.compile(r"^(final test accuracy|final held-out loss|total time|error:|no CUDA GPU|stopped |"
                      r"epoch \d+ test_acc)")
    for cmd, lines in blocks(paths):
        name = "fashion_mnist" if "fashion_mnist" in cmd else "char_lm" if "char_lm" in cmd else cmd.split()[0]
        m = re.search(r"--model (\S+)", cmd)
        if m:
            name += " " + m.group(1)
        rc = None
        for line in lines:
            r = re.match(r"^--> rc=(\d+)", line)
            if r:
                rc = int(r.group(1))
        speed = [l for l in lines if re.match(r"^(step \d+/\d+ |epoch \d+/\d+ step )", l)]
        facts = [l.strip() for l in lines if keep.match(l)]
        if speed:
            facts.insert(0, "last progress: " + speed[-1].strip())
        results.append({"name": name, "command": cmd, "rc": rc, "facts": facts})
    return results


def parse_memcheck(paths):
    results = []
    for cmd, lines in blocks(paths):
        text = "\n".join(lines)
        summary = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        api_oom = len(re.findall(r"Program hit cudaErrorMemoryAllocation", text))
        other = [l.strip("= ").strip() for l in lines
                 if re.match(r"^=+ (Invalid|Uninitialized|Out-of-range|Misaligned|Address|Program hit)", l)
                 and "cudaErrorMemoryAllocation" not in l]
        tests = SUMMARY.findall(text)
        rc = re.findall(r"^--> rc=(\d+)", text, re.M)
        results.append({"command": cmd, "errors": int(summary[-1]) if summary else None, "api_oom": api_oom,
                        "other": other[:10], "tests": tests[-1] if tests else None,
                        "rc": int(rc[-1]) if rc else None})
    return results


def parse_steps(path):
    if not path or not os.path.exists(path):
        return []
    rows = []
    for line in read(path).splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            rows.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return rows


# ---- output --------------------------------------------------------------------------------

def report_json(meta, figures, counts):
    tests = counts if counts else {k: None for k in TEST_KEYS}
    return {"device": meta["device"], "driver": meta["driver"], "cuda": meta["cuda"], "commit": meta["commit"],
            "date": meta["date"], "figures": figures, "tests": tests}


def cell(text):
    """Text made safe for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def fmt(x, digits=4):
    if x is None:
        return "—"
    return f"{sig(x, digits):g}"


def report_md(meta, rows, cases, counts, failing, asserts, examples, memcheck, steps, history, origin=None,
              e2e_rows=(), sdpa=None, sdpa_cudnn=None):
    slug = device_slug(meta["device"])
    out = [f"# GPU results: {meta['device']}", "",
           origin or "Written by `scripts/device-check.sh --quick` (through `scripts/gpu_report.py`).",
           f"The next run on this device overwrites this file and `gpu-{slug}.json`, so every figure here",
           "belongs to the commit below. Ratios are ember time / peer time: above 1 means ember is slower.", "",
           "| | |", "|---|---|",
           f"| device | {meta['device']} |", f"| driver | {meta['driver']} |", f"| CUDA | {meta['cuda']} |",
           f"| commit | `{meta['commit']}` |", f"| date | {meta['date']} |", ""]
    if history:
        out += ["Earlier runs kept for good: " + ", ".join(f"[{h}]({h})" for h in history) + ".", ""]
    if steps:
        out += ["## Steps", "", "| step | status | detail |", "|---|---|---|"]
        out += [f"| {cell(n)} | {cell(s)} | {cell(d)} |" for n, s, d in steps]
        out.append("")
    out += ["## Tests", ""]
    if counts:
        out.append(f"All suites: **{counts['cases']} test cases, {counts['passed']} passed, {counts['failed']} failed, "
                   f"{counts['skipped']} skipped**" + (f"; {asserts.replace('[doctest] ', '')}" if asserts else "") + ".")
    else:
        out.append("No doctest summary: the tests did not run or did not finish.")
    if failing:
        out += ["", "Failing cases:", ""] + [f"- {f}" for f in failing]
    out.append("")
    out += ["## Benchmarks", "", "Time per call: Google Benchmark's mean over its iterations of the device time between",
            "two CUDA events around each call, after warm-up calls.", "",
            "| workload | ember ms | peer | peer ms | ember / peer | ember TFLOP/s | peer TFLOP/s | rel_err |",
            "|---|---|---|---|---|---|---|---|"]
    if not rows:
        out.append("| no benchmark figures in this run | | | | | | | |")
    for r in rows:
        c, p = r["case"], r["peer_case"]
        if "ms" not in c:
            out.append(f"| {r['name']} | error: {cell(c.get('error', '?'))} | | | | | | |")
            continue
        ratio = c["ms"] / p["ms"] if p and p.get("ms") else None
        cc = c.get("counters", {})
        pc = (p or {}).get("counters", {})
        out.append(f"| {r['name']} | {fmt(c['ms'])} | {r['peer_name'] or '—'} | {fmt(p['ms']) if p else '—'} | "
                   f"{fmt(ratio, 3)} | {fmt(cc.get('TFLOP/s'))} | {fmt(pc.get('TFLOP/s'))} | {fmt(cc.get('rel_err'), 2)} |")
    tf32 = [(b, c) for (b, l), c in cases.items() if l == "cublas_tf32" and "ms" in c]
    if tf32:
        out += ["", "cuBLAS with TF32 (the only TF32 figures; ember's f32 is true f32):", "",
                "| case | ms | TFLOP/s |", "|---|---|---|"]
        out += [f"| {b} | {fmt(c['ms'])} | {fmt(c['counters'].get('TFLOP/s'))} |" for b, c in tf32]
    if sdpa_cudnn:
        out += ["", "G4 beside cuDNN's fused attention (PyTorch's cuDNN SDPA backend, same run; the JSON peer "
                "stays flash):", "", "| case | ember ms | flash ms | cuDNN ms | ember / cuDNN |", "|---|---|---|---|---|"]
        for base, (ms, _) in sorted(sdpa_cudnn.items()):
            mine = cases.get((base, "ember"), {}).get("ms")
            flash = (sdpa or {}).get(base, (None, None))[0]
            out.append(f"| {base} | {fmt(mine)} | {fmt(flash)} | {fmt(ms)} | {fmt(mine / ms if mine else None, 3)} |")
    mem = [(b, c) for (b, l), c in cases.items() if b.startswith("mem/")]
    if mem:
        out += ["", "Memory-bound cases (ember-gpu-bench; `of_copy` = rate / device-to-device copy rate):", "",
                "| case | ms | GB/s | of copy |", "|---|---|---|---|"]
        for b, c in mem:
            if "ms" in c:
                out.append(f"| {b} | {fmt(c['ms'])} | {fmt(c['counters'].get('GB/s'))} | "
                           f"{fmt(c['counters'].get('of_copy'), 3)} |")
            else:
                out.append(f"| {b} | error: {cell(c.get('error'))} | | |")
    out.append("")
    if e2e_rows:
        out += ["## End-to-end training steps", "",
                "Forward, backward and AdamW step; median step time over the timed steps (CUDA events). Ratio =",
                "ember's step time / the peer's (the same tokens per step, so also time per token; 0.833 is",
                "1.2x the peer's tokens/s). MFU against the bf16 matmul ceiling each program measured.", "",
                "| workload | ember ms | ember tokens/s | ember MFU | ember peak GiB | peer | peer ms | "
                "peer tokens/s | peer MFU | peer peak GiB | ember / peer |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in e2e_rows:
            m, p = r["ember"] or {}, r["peer"] or {}
            ratio = m["step_ms"] / p["step_ms"] if m.get("step_ms") and p.get("step_ms") else None
            out.append(f"| {r['name']} | {fmt(m.get('step_ms'))} | {fmt(m.get('tokens_per_s'))} | "
                       f"{fmt(m.get('mfu'), 3)} | {fmt(m.get('peak_mem_gib'), 3)} | {r['peer_name']} | "
                       f"{fmt(p.get('step_ms'))} | {fmt(p.get('tokens_per_s'))} | {fmt(p.get('mfu'), 3)} | "
                       f"{fmt(p.get('peak_mem_gib'), 3)} | {fmt(ratio, 3)} |")
        out.append("")
    if examples:
        out += ["## Examples", ""]
        for e in examples:
            status = "" if e["rc"] is None else (" (ok)" if e["rc"] == 0 else f" (**exit {e['rc']}**)")
            out.append(f"- `{e['command']}`{status}")
            out += [f"  - {cell(f)}" for f in e["facts"]]
        out.append("")
    if memcheck:
        out += ["## compute-sanitizer memcheck", ""]
        for m in memcheck:
            line = f"- `{m['command']}`: ERROR SUMMARY {m['errors'] if m['errors'] is not None else 'missing'}"
            if m["api_oom"]:
                line += f" ({m['api_oom']} of them cudaErrorMemoryAllocation API errors of the deliberate out-of-memory case)"
            if m["tests"]:
                line += "; tests: {} cases, {} passed, {} failed, {} skipped".format(*m["tests"])
            out.append(line)
            out += [f"  - {cell(o)}" for o in m["other"]]
        out.append("")
    return "\n".join(out)


def device_slug(name):
    """'NVIDIA H200' -> 'h200'; 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    s = re.sub(r"^(nvidia|tesla)\s+", "", name.strip(), flags=re.I)
    s = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return s or "unknown"


def make_report(args):
    cases, context = parse_bench_files(args.bench or [])
    sdpa = parse_sdpa(args.sdpa or [])
    sdpa_cudnn = parse_sdpa(args.sdpa or [], G4_CUDNN_LINE)
    figures, rows = build_figures(cases, sdpa)
    e2e_figs, e2e_rows = e2e_figures(parse_e2e(getattr(args, "e2e", None) or []))
    figures += e2e_figs
    counts, failing, asserts = parse_tests(args.tests)
    meta = {"device": args.device or context.get("device", "unknown"), "driver": args.driver or "unknown",
            "cuda": args.cuda or "unknown", "commit": args.commit or "unknown",
            "date": args.date or context.get("date", "unknown")}
    history = []
    if args.md:
        d, slug = os.path.dirname(os.path.abspath(args.md)), device_slug(meta["device"])
        history = sorted(f for f in os.listdir(d) if f.startswith(f"gpu-{slug}-") and f.endswith(".md"))
    doc = report_json(meta, figures, counts)
    md = report_md(meta, rows, cases, counts, failing, asserts, parse_examples(args.examples or []),
                   parse_memcheck(args.memcheck or []), parse_steps(args.steps), history, getattr(args, "origin", None),
                   e2e_rows, sdpa, sdpa_cudnn)
    return doc, md


def validate(doc):
    """Problems with the JSON's shape, as strings (empty when it is right)."""
    bad = []
    if list(doc) != TOP_KEYS:
        bad.append(f"top-level keys {list(doc)} != {TOP_KEYS}")
    if not re.fullmatch(r"[0-9a-f]{40}", str(doc.get("commit"))):
        bad.append(f"commit {doc.get('commit')!r} is not a full 40-character sha")
    if list(doc.get("tests", {})) != TEST_KEYS:
        bad.append(f"tests keys {list(doc.get('tests', {}))} != {TEST_KEYS}")
    for f in doc.get("figures", []):
        if list(f) != FIGURE_KEYS:
            bad.append(f"figure keys {list(f)} != {FIGURE_KEYS}")
        if not re.match(r"^G\d+_[a-z0-9_]+/(f32|bf16|f16|f64)(/|$)", f.get("name", "")):
            bad.append(f"figure name {f.get('name')!r} is not G<n>_<family>/<dtype>/...")
        if f.get("peer") is not None:
            if f.get("ratio") is None or abs(f["ratio"] - f["ember"] / f["peer"]) > 1e-3 * max(1.0, f["ratio"]):
                bad.append(f"{f['name']}: ratio {f.get('ratio')} != ember / peer {f['ember'] / f['peer']:.4f}")
        elif f.get("ratio") is not None or f.get("peer_name") is not None:
            bad.append(f"{f['name']}: no peer but ratio or peer_name set")
    return bad


def write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def self_test(fixtures):
    """Runs the parser on bench/fixtures and checks the JSON's shape and some values."""
    f = lambda name: os.path.join(fixtures, name)
    expected = json.loads(read(f("expected.json")))
    ns = argparse.Namespace(
        bench=[f("gpu-bench-console.txt"), f("conv-bench.json"), f("softmax-console.txt"), f("attention-console.txt"),
               f("torn-bench.json")],
        sdpa=[f("sdpa.txt")], tests=f("tests.txt"), examples=[f("examples.txt")], memcheck=[f("memcheck.txt")],
        steps=f("steps.tsv"), device="NVIDIA H200", driver="580.159.04", cuda="13.0",
        commit="70212d4fb4817eb51a3d6083e7f3a987511ec3c5", date="2026-12-04T15:04:26Z", md=None, json=None)
    doc, md = make_report(ns)
    problems = validate(json.loads(json.dumps(doc)))
    by_name = {x["name"]: x for x in doc["figures"]}
    for name, want in expected["figures"].items():
        got = by_name.get(name)
        if got is None:
            problems.append(f"figure {name} missing (have {sorted(by_name)})")
            continue
        for key, value in want.items():
            ok = got[key] == value if not isinstance(value, float) else abs(got[key] - value) <= 1e-3 * abs(value)
            if not ok:
                problems.append(f"{name}.{key} = {got[key]!r}, expected {value!r}")
    for name in expected.get("absent", []):
        if name in by_name:
            problems.append(f"figure {name} should not be in the JSON")
    if doc["tests"] != expected["tests"]:
        problems.append(f"tests {doc['tests']} != {expected['tests']}")
    if len(doc["figures"]) != expected["count"]:
        problems.append(f"{len(doc['figures'])} figures, expected {expected['count']}")
    for needle in expected["md_contains"]:
        if needle not in md:
            problems.append(f"the md lacks {needle!r}")
    with tempfile.TemporaryDirectory() as tmp:  # as device-check.sh calls it: files, and the history link
        kept = "gpu-h200-2026-12-04-first-run.md"
        write(os.path.join(tmp, kept), "kept\n")
        ns.json, ns.md = os.path.join(tmp, "gpu-h200.json"), os.path.join(tmp, "gpu-h200.md")
        doc2, md2 = make_report(ns)
        if doc2 != doc:
            problems.append("a second run gave a different JSON")
        if f"[{kept}]({kept})" not in md2:
            problems.append("the md does not link the kept earlier run")
        # cuDNN's SDPA lines: an extra md table, never G4's JSON peer (a made-up figure here).
        extra = os.path.join(tmp, "sdpa-cudnn.txt")
        write(extra, "G4cudnn G4_attention/bf16/T1024/D64/full/fwd 0.150 ms 229.06 TFLOP/s\n")
        ns.sdpa, ns.json, ns.md = [f("sdpa.txt"), extra], None, None
        doc3, md3 = make_report(ns)
        if doc3 != doc:
            problems.append("cuDNN SDPA lines changed the JSON")
        if "| G4_attention/bf16/T1024/D64/full/fwd |" not in md3 or "| 0.15 |" not in md3:
            problems.append("the md lacks the cuDNN SDPA table row")
    problems += e2e_self_test()
    if problems:
        print("gpu_report self-test: FAILED\n  " + "\n  ".join(problems))
        return 1
    print(f"gpu_report self-test: ok ({len(doc['figures'])} figures, tests {doc['tests']})")
    return 0


E2E_SAMPLE = """# ember-g6g7_bench on cuda:0
G6_gpt/bf16: 40.000 ms/step, 204800 tokens/s
{"bench": "G6_gpt", "library": "ember", "mode": "eager", "dtype": "bf16", "step_ms": 40.0, "mfu": 0.2}
{"bench": "G7_lstm_lm", "library": "ember", "mode": "eager", "dtype": "f32", "step_ms": 30.0, "mfu": 0.2}
{"bench": "G7_lstm_lm", "library": "ember", "mode": "eager", "dtype": "bf16", "step_ms": 18.0, "mfu": 0.2}
G6_gpt/bf16 40.000
# NVIDIA H200 torch 2.11.0
{"bench": "G6_gpt", "library": "torch", "mode": "eager", "dtype": "bf16", "step_ms": 30.0, "mfu": 0.2}
{"bench": "G6_gpt", "library": "torch", "mode": "compile", "dtype": "bf16", "step_ms": 20.0, "mfu": 0.2}
{"bench": "G7_lstm_lm", "library": "torch", "mode": "eager", "dtype": "f32", "step_ms": 42.0, "mfu": 0.2}
{"broken json
"""


def e2e_self_test():
    """--e2e: the four G6/G7 figures from JSON lines, a missing peer left null."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "e2e.txt")
        write(path, E2E_SAMPLE)
        figures, rows = e2e_figures(parse_e2e([path]))
    by = {f["name"]: f for f in figures}
    want = {"G6_gpt/bf16/vs_eager": (40.0, 30.0, 1.333), "G6_gpt/bf16/vs_compile": (40.0, 20.0, 2.0),
            "G7_lstm_lm/f32": (30.0, 42.0, 0.714), "G7_lstm_lm/bf16": (18.0, None, None)}
    for name, (ember, peer, ratio) in want.items():
        f = by.get(name)
        if f is None:
            problems.append(f"e2e figure {name} missing (have {sorted(by)})")
        elif (f["ember"], f["peer"], f["ratio"]) != (ember, peer, ratio):
            problems.append(f"e2e {name}: {(f['ember'], f['peer'], f['ratio'])} != {(ember, peer, ratio)}")
    doc = {"device": "d", "driver": "v", "cuda": "c", "commit": "0" * 40, "date": "x", "figures": figures,
           "tests": {k: None for k in TEST_KEYS}}
    problems += [f"e2e: {p}" for p in validate(doc)]
    if len(rows) != 4:
        problems.append(f"e2e: {len(rows)} md rows, expected 4")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", action="append", help="Google Benchmark output (console or JSON); repeatable")
    ap.add_argument("--sdpa", action="append", help="bench/g4_sdpa_torch.py output; repeatable")
    ap.add_argument("--e2e", action="append",
                    help="G6/G7 JSON lines (ember-g6g7_bench, bench/g*_torch.py); repeatable")
    ap.add_argument("--tests", help="doctest output of the whole test binary")
    ap.add_argument("--examples", action="append", help="examples' output; repeatable")
    ap.add_argument("--memcheck", action="append", help="compute-sanitizer output; repeatable")
    ap.add_argument("--steps", help="device-check.sh step table (name TAB status TAB detail)")
    ap.add_argument("--device", help="GPU name, e.g. 'NVIDIA H200' (default: the benches' context)")
    ap.add_argument("--driver", help="driver version")
    ap.add_argument("--cuda", help="CUDA version")
    ap.add_argument("--commit", help="full git sha of the code that ran")
    ap.add_argument("--date", help="date of the run (default: the benches' context)")
    ap.add_argument("--json", help="write the JSON here")
    ap.add_argument("--md", help="write the Markdown report here")
    ap.add_argument("--origin", help="the md's first sentence: how the report was made")
    ap.add_argument("--slug", action="store_true", help="print the device slug of --device and exit")
    ap.add_argument("--self-test", metavar="DIR", help="check the parser on the fixtures in DIR")
    args = ap.parse_args()
    if args.self_test:
        return self_test(args.self_test)
    if args.slug:
        print(device_slug(args.device or ""))
        return 0
    doc, md = make_report(args)
    for problem in validate(doc):
        print(f"gpu_report: warning: {problem}", file=sys.stderr)
    text = json.dumps(doc, indent=1) + "\n"
    if args.json:
        write(args.json, text)
    if args.md:
        write(args.md, md + "\n")
    if not args.json and not args.md:
        sys.stdout.write(text)
    print(f"gpu_report: {len(doc['figures'])} figures, "
          f"{sum(1 for f in doc['figures'] if f['peer'] is not None)} with a peer; tests {doc['tests']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
