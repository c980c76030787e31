#!/bin/sh
# tests/tools/bench_gpu.sh — `make bench-gpu`: decode speed, GPU memory and the fraction of the HBM-bandwidth bound
# on random-weight TinyLlama-1.1B (Q4_K_M, F16) and Llama-2-7B (F16) GGUFs, for every cache mode.
# Bound: bytes read per decoded token = weight bytes + KV cache bytes (kv_bytes), at the device's peak bandwidth
# (2 x memory clock x bus width, from cudaDeviceGetAttribute). The token embedding is counted although decoding
# reads one row of it (2-6% of the weights here), so the fraction is slightly pessimistic.
# Env: BENCH_DIR (models, default /tmp/kvchat-bench), BENCH_PLAN (lines "model|type|ctx list|modes"),
# BENCH_GEN (decoded tokens per context, default 32), BENCH_OUT (raw JSON lines, default $BENCH_DIR/results.jsonl).
set -u
build=${BUILD:-build/cuda}
bin=${KVCHAT_BIN:-$build/kvchat}
mk=$build/mkmodel
info=$build/tests/gpu/gpu_info
dir=${BENCH_DIR:-/tmp/kvchat-bench}
gen=${BENCH_GEN:-32}
out=${BENCH_OUT:-$dir/results.jsonl}
mkdir -p "$dir"
for f in "$bin" "$mk" "$info"; do
  [ -x "$f" ] || { echo "bench-gpu: $f is not built (make bench-gpu builds it)" >&2; exit 1; }
done
devjson=$("$info") || { echo "bench-gpu: no CUDA device" >&2; exit 1; }
echo "device: $devjson"

all_modes="full,fastgen,kv4,kv2,fastgen+kv2"
# FastGen rows stop at 1k: its prefill profiling downloads every layer's attention probabilities (n_head x 256 x
# context floats per micro-batch), which makes long FastGen prefills take minutes.
plan=${BENCH_PLAN:-"tinyllama|q4_k_m|1024,8192,32768|full,kv4,kv2
tinyllama|q4_k_m|1024|fastgen,fastgen+kv2
tinyllama|f16|1024,8192,32768|full,kv4,kv2
tinyllama|f16|1024|fastgen,fastgen+kv2
llama7b|f16|1024,8192|full,kv4,kv2
llama7b|f16|1024|fastgen,fastgen+kv2"}
: "$all_modes"

mode_args() {
  case $1 in
    full) echo "--kv-policy full" ;;
    fastgen) echo "--kv-policy fastgen" ;;
    kv4) echo "--kv-policy full --kv-bits 4" ;;
    kv2) echo "--kv-policy full --kv-bits 2" ;;
    fastgen+kv2) echo "--kv-policy fastgen --kv-bits 2" ;;
    *) echo "bench-gpu: unknown mode $1" >&2; echo "" ;;
  esac
}

: >"$out"
printf '%s\n' "$plan" >"$dir/plan.txt"
while IFS='|' read -r preset type ctxs modes; do
  [ -n "$preset" ] || continue
  model="$dir/$preset-$type.gguf"
  if [ ! -f "$model" ]; then
    echo "generating $model"
    "$mk" --preset "$preset" --type "$type" -o "$model" || exit 1
  fi
  for mode in $(echo "$modes" | tr ',' ' '); do
    args=$(mode_args "$mode")
    t0=$(date +%s)
    # shellcheck disable=SC2086
    if line=$("$bin" bench -m "$model" --device cuda --ctx "$ctxs" --bench-gen "$gen" --json $args 2>"$dir/err.txt"); then
      printf '{"preset": "%s", "type": "%s", "mode": "%s", "device": %s, "bench": %s}\n' "$preset" "$type" "$mode" \
        "$devjson" "$line" >>"$out"
      echo "done $preset $type $mode ($(($(date +%s) - t0)) s)"
    else
      echo "FAILED $preset $type $mode: $(tail -n 2 "$dir/err.txt")"
    fi
  done
done <"$dir/plan.txt"

python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit("no results")
dev = rows[0]["device"]
bw = dev["peak_bw"]
print(f"\n{dev['name']}: {dev['sm']} SMs, peak memory bandwidth {bw / 1e12:.2f} TB/s "
      f"({dev['mem_clock_khz'] / 1e3:.0f} MHz x {dev['bus_bits']} bit x 2)")
print(f"{'model':<22}{'mode':<13}{'ctx':>7}{'prefill/s':>11}{'decode/s':>10}{'bound/s':>9}{'of bound':>9}"
      f"{'KV MiB':>9}{'peak MiB':>10}{'GPU used':>10}")
for r in rows:
    b = r["bench"]
    for x in b["rows"]:
        read = b["weights_bytes"] + x["kv_bytes"]
        bound = bw / read
        print(f"{r['preset'] + '-' + r['type']:<22}{r['mode']:<13}{x['ctx']:>7}{x['prefill_tok_s']:>11.0f}"
              f"{x['decode_tok_s']:>10.1f}{bound:>9.0f}{x['decode_tok_s'] / bound:>9.0%}"
              f"{x['kv_bytes'] / 2**20:>9.0f}{x['backend_peak_bytes'] / 2**20:>10.0f}"
              f"{(x['gpu_mem_used'] or 0) / 2**20:>10.0f}")
EOF
