#!/bin/sh
# tests/tools/bench.sh — `make bench`: CPU speed on random-weight TinyLlama-1.1B-shape GGUFs (dim 2048, 22 layers,
# 32 heads, 4 KV heads, ffn 5632, vocab 32000) in Q4_K_M and Q8_0, generated once by mkmodel into
# $KVCHAT_BENCH_DIR (default /tmp/kvchat-bench). Prefill(128) and decode speed, as llama.cpp's pp128/tg reports.
# Each file runs with the default int8 decode activations and with exact fp32 ones (--exact-matmul). Extra
# arguments go to `kvchat bench` (e.g. --kv-bits 2 --ctx 2048,8192).
set -eu
shift 2>/dev/null || true # the build dir argument (unused: mkmodel is always the CPU build)
build=build/cpu
dir=${KVCHAT_BENCH_DIR:-/tmp/kvchat-bench}
mkdir -p "$dir"
make --no-print-directory CUDA=0 mkmodel >/dev/null
for t in q4_k_m q8_0; do
  f="$dir/tinyllama-$t.gguf"
  if [ ! -s "$f" ]; then
    echo "bench: generating $f"
    "$build/mkmodel" --preset tinyllama --type "$t" -o "$f.tmp" >/dev/null && mv "$f.tmp" "$f"
  fi
done
threads=${KVCHAT_BENCH_THREADS:-$(nproc)}
# Each file twice: the default int8 activations for decode (per 32 values), then --exact-matmul (fp32).
for t in q4_k_m q8_0; do
  for a in "" --exact-matmul; do
    echo "bench: tinyllama-$t ${a:-(int8 decode activations)}"
    ./kvchat bench -m "$dir/tinyllama-$t.gguf" -t "$threads" --device cpu --kv-policy full --ctx 128 --bench-gen 32 $a "$@"
  done
done
