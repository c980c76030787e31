#!/bin/sh
# tests/gpu/gen_match.sh — greedy generation on --device cuda must equal --device cpu token for token, and the KV
# cache's accounting (kv_bytes and its parts, retained tokens, heads per policy) must be the same, for every
# cache mode, on stories260K, the default Gemma 3 model (when present) and small random-weight GGUFs; plus a
# compute-sanitizer memcheck run when the tool exists. Prints "N passed, N failed".
set -u
bin=${KVCHAT_BIN:-./kvchat}
build=$(dirname "$bin")
pass=0
fail=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvchat-gen.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

if [ ! -x "$bin" ]; then
  echo "FAIL: $bin is not built"
  echo "0 passed, 1 failed"
  exit 1
fi

# stories260K: $KVCHAT_SHARED/models, ../shared/models or .devdata/
stories=""
for d in "${KVCHAT_SHARED:-../shared}/models/stories260K" ../shared/models/stories260K .devdata/stories260K; do
  if [ -f "$d/stories260K.bin" ] && [ -f "$d/tok512.model" ]; then stories=$d; break; fi
done
gemma=assets/models/gemma-3-270m-q4_k_m.gguf

modes="full|--kv-policy full
fastgen|--kv-policy fastgen
kv4|--kv-policy full --kv-bits 4 --kv-residual 32
kv2|--kv-policy full --kv-bits 2 --kv-residual 32
fastgen+kv2|--kv-policy fastgen --kv-bits 2 --kv-residual 32
kv4-default-residual|--kv-policy full --kv-bits 4
kv2-block-flush|--kv-policy full --kv-bits 2 --kv-residual 64 --kv-flush block"

# run NAME ARGS...: generate with both devices and compare the outputs.
run_case() {
  name=$1
  shift
  # the CPU twin is the exact path (fp32 activations): the default int8 activations are a different model of
  # the arithmetic, whose rounding flips near-tied tokens of random-weight models
  "$bin" "$@" --device cpu --exact-matmul --json >"$tmp/cpu.out" 2>"$tmp/cpu.err"
  rc_c=$?
  "$bin" "$@" --device cuda --json >"$tmp/gpu.out" 2>"$tmp/gpu.err"
  rc_g=$?
  if [ $rc_c -ne 0 ] || [ $rc_g -ne 0 ]; then
    echo "FAIL $name: exit cpu $rc_c cuda $rc_g"
    tail -n 3 "$tmp/cpu.err" "$tmp/gpu.err"
    fail=$((fail + 1))
    return
  fi
  # the text, and the stats line apart from the device, the speeds and the device memory: the cache's
  # accounting (kv_bytes and its parts, retained tokens, the heads per policy) must be the same on both devices
  for d in cpu gpu; do
    sed '$d' "$tmp/$d.out" >"$tmp/$d.txt"
    tail -n 1 "$tmp/$d.out" | sed -e 's/"device": "[a-z]*", //' -e 's/"prefill_tok_s": [0-9.e+-]*, //' \
      -e 's/"decode_tok_s": [0-9.e+-]*, //' -e 's/, "gpu_mem_used": .*/}/' >"$tmp/$d.kv"
  done
  if ! grep -q '"kv_bytes": [0-9]' "$tmp/gpu.kv" || ! tail -n 1 "$tmp/gpu.out" | grep -q '"gpu_mem_used": [1-9]'; then
    fail=$((fail + 1))
    echo "FAIL $name: no KV or GPU memory figures in the cuda stats: $(tail -n 1 "$tmp/gpu.out" | head -c 300)"
  elif ! cmp -s "$tmp/cpu.kv" "$tmp/gpu.kv"; then
    fail=$((fail + 1))
    echo "FAIL $name: the KV accounting differs"
    echo "  cpu: $(cat "$tmp/cpu.kv")"
    echo "  gpu: $(cat "$tmp/gpu.kv")"
  elif cmp -s "$tmp/cpu.txt" "$tmp/gpu.txt"; then
    pass=$((pass + 1))
    echo "ok   $name ($(wc -c <"$tmp/gpu.txt") bytes, kv_bytes $(sed 's/.*"kv_bytes": \([0-9]*\).*/\1/' "$tmp/gpu.kv"))"
  else
    fail=$((fail + 1))
    echo "FAIL $name: outputs differ"
    echo "  cpu: $(head -c 300 "$tmp/cpu.txt" | tr '\n' ' ')"
    echo "  gpu: $(head -c 300 "$tmp/gpu.txt" | tr '\n' ' ')"
  fi
}

run_model() { # LABEL PROMPT MODEL-ARGS...
  label=$1
  prompt=$2
  shift 2
  printf '%s\n' "$modes" | while IFS='|' read -r mname margs; do
    # shellcheck disable=SC2086
    echo "$label|$mname|$margs"
  done >"$tmp/cases.txt"
  while IFS='|' read -r l mname margs; do
    # shellcheck disable=SC2086
    run_case "$l $mname" "$@" -p "$prompt" -n 64 --temp 0 --no-echo $margs
  done <"$tmp/cases.txt"
}

if [ -n "$stories" ] && "$bin" -m "$stories/stories260K.bin" --tokenizer "$stories/tok512.model" -p x -n 1 \
  --device cuda >/dev/null 2>"$tmp/probe.err"; then :; elif grep -q "CUDA" "$tmp/probe.err" 2>/dev/null; then
  echo "SKIP: $(head -n 1 "$tmp/probe.err")"
  echo "0 passed, 0 failed"
  exit 0
fi

if [ -n "$stories" ]; then
  run_model stories260K "Once upon a time, there was a little girl named Lily. She loved to play outside in the park" \
    -m "$stories/stories260K.bin" --tokenizer "$stories/tok512.model"
else
  echo "SKIP: stories260K not found (../shared/models or .devdata/)"
fi

if [ "${GEN_MATCH_DEFAULT_MODEL:-1}" != 1 ]; then
  echo "SKIP: the default model (GEN_MATCH_DEFAULT_MODEL=0; under the CUDA emulation it takes ~25 min)"
elif [ -f "$gemma" ]; then
  run_model gemma-3-270m "The three primary colors are" -m "$gemma"
else
  echo "SKIP: $gemma absent (make model)"
fi

# random-weight GGUFs: the gemma3 path (MQA, head_dim 256 in the 270m preset, sliding windows, NEOX, GELU) and
# llama GQA in quantised types
mk="$build/mkmodel"
if [ -x "$mk" ]; then
  "$mk" --preset tiny-gemma3 --type q4_k_m -o "$tmp/tg3.gguf" >/dev/null &&
    run_model tiny-gemma3-q4_k_m "The three primary colors are" -m "$tmp/tg3.gguf"
  "$mk" --preset tiny --type q8_0 -o "$tmp/tl.gguf" >/dev/null &&
    run_model tiny-llama-q8_0 "Once upon a time" -m "$tmp/tl.gguf"
else
  echo "SKIP: $mk not built (random-weight models)"
fi

if command -v compute-sanitizer >/dev/null 2>&1 && [ -n "$stories" ]; then
  for margs in "--kv-policy fastgen --kv-bits 2 --kv-residual 32" "--kv-policy full --kv-bits 4 --kv-residual 32"; do
    # shellcheck disable=SC2086
    compute-sanitizer --tool memcheck --leak-check full "$bin" -m "$stories/stories260K.bin" \
      --tokenizer "$stories/tok512.model" -p "Once upon a time, there was a little girl named Lily" -n 24 --temp 0 \
      --no-echo --device cuda $margs >"$tmp/san.txt" 2>&1
    if grep -q "ERROR SUMMARY: 0 errors" "$tmp/san.txt"; then
      pass=$((pass + 1))
      echo "ok   compute-sanitizer memcheck ($margs): 0 errors"
    else
      fail=$((fail + 1))
      echo "FAIL compute-sanitizer memcheck ($margs):"
      grep -E "ERROR SUMMARY|Invalid|Program hit|leaked" "$tmp/san.txt" | head -n 20
    fi
  done
else
  echo "SKIP: compute-sanitizer not found (or no stories260K)"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
