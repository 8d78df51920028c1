#!/usr/bin/env bash
# The gpt example's CTest checks. Usage:
#   check_run.sh beats EXE ARGS...           one run; its last line must be `result:` with
#                                            val_bits_per_byte below baseline_bits_per_byte
#   check_run.sh resume CKPT N EXE ARGS...   ARGS with --stop-after N then --resume, against one
#                                            straight run: the final held-out lines must match
set -uo pipefail
mode=$1
shift
if [[ $mode == beats ]]; then
  out=$("$@") || { echo "$out"; echo "the run failed"; exit 1; }
  echo "$out"
  echo "$out" | tail -n 1 | awk '
    /^result:/ { for (i = 2; i <= NF; ++i) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END {
      if (!("val_bits_per_byte" in v) || !("baseline_bits_per_byte" in v)) { print "no result line last"; exit 1 }
      if (v["val_bits_per_byte"] + 0 < v["baseline_bits_per_byte"] + 0)
        printf "beats the baseline: %s < %s bits/byte\n", v["val_bits_per_byte"], v["baseline_bits_per_byte"]
      else { printf "does not beat the baseline: %s >= %s bits/byte\n", v["val_bits_per_byte"], v["baseline_bits_per_byte"]; exit 1 }
    }'
  exit $?
fi
if [[ $mode == resume ]]; then
  ckpt=$1 n=$2
  shift 2
  rm -f "${ckpt}_a.safetensors" "${ckpt}_b.safetensors"
  "$@" --checkpoint "${ckpt}_a.safetensors" --stop-after "$n" || exit 1
  a=$("$@" --checkpoint "${ckpt}_a.safetensors" --resume) || { echo "$a"; exit 1; }
  b=$("$@" --checkpoint "${ckpt}_b.safetensors") || { echo "$b"; exit 1; }
  echo "$a"
  fa=$(grep '^final held-out' <<<"$a") fb=$(grep '^final held-out' <<<"$b")
  echo "resumed:  $fa"
  echo "straight: $fb"
  [[ -n $fa && $fa == "$fb" ]] && echo "resume identical"
  exit 0
fi
echo "check_run.sh: unknown mode $mode" >&2
exit 2
