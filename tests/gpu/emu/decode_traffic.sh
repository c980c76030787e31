#!/bin/sh
# tests/gpu/emu/decode_traffic.sh — what decoding asks of the CUDA runtime per token, counted by the CUDA
# emulation (KN_EMU_STATS): no device or pinned allocation, and host waits bounded (one for the logits; one more
# when heavy-hitter scores read the step's attention back, for all layers at once). Measured as the difference
# between generating 40 and 72 tokens, so loading and prefill cancel out; both runs are past the first 2/4-bit
# packing, where the packed pool takes its first chunk (the pools grow by 64 blocks, here plenty for 32 tokens).
# Usage: decode_traffic.sh [EMU_BUILD]. Prints "N passed, N failed".
set -u
emu=${1:-build/cuemu}
bin=$emu/kvchat
pass=0
fail=0
if [ ! -x "$bin" ] || [ ! -x "$emu/mkmodel" ]; then
  echo "SKIP: $bin not built (make test-emu builds it)"
  echo "0 passed, 0 failed"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvchat-traffic.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
"$emu/mkmodel" --preset tiny --type q8_0 -o "$tmp/m.gguf" >/dev/null || {
  echo "FAIL: mkmodel"
  echo "0 passed, 1 failed"
  exit 1
}

# counts N MODE-ARGS...: the emulation's counters after generating N tokens
counts() {
  n=$1
  shift
  rm -f "$tmp/st"
  # shellcheck disable=SC2068
  KN_EMU_STATS="$tmp/st" "$bin" -m "$tmp/m.gguf" -p "Once upon a time there was a" -n "$n" --temp 0 --no-echo \
    --device cuda "$@" >/dev/null 2>"$tmp/err" || { echo "exit $?: $(tail -n 1 "$tmp/err")"; return 1; }
  cat "$tmp/st"
}
field() { echo "$2" | sed "s/.*$1 \([0-9]*\).*/\1/"; }

# mode|waits allowed per token|args
printf '%s\n' "full|1|--kv-policy full" "kv4|1|--kv-policy full --kv-bits 4 --kv-residual 32" \
  "kv2|1|--kv-policy full --kv-bits 2 --kv-residual 32" "fastgen|2|--kv-policy fastgen" \
  "fastgen+kv2|2|--kv-policy fastgen --kv-bits 2 --kv-residual 32" "h2o|2|--kv-policy h2o --kv-budget 24" \
  "local|1|--kv-policy local --kv-budget 24" >"$tmp/modes"
while IFS='|' read -r name waits args; do
  # shellcheck disable=SC2086
  a=$(counts 40 $args) && b=$(counts 72 $args) || {
    echo "FAIL $name: $a $b"
    fail=$((fail + 1))
    continue
  }
  bad=""
  for f in mallocs frees host_allocs; do
    d=$(($(field $f "$b") - $(field $f "$a")))
    [ "$d" -eq 0 ] || bad="$bad $f +$d"
  done
  dw=$(($(field waits "$b") - $(field waits "$a")))
  [ "$dw" -le $((32 * waits)) ] || bad="$bad waits +$dw (allowed $((32 * waits)))"
  dl=$(($(field launches "$b") - $(field launches "$a")))
  dd=$(($(field d2h "$b") - $(field d2h "$a")))
  du=$(($(field h2d "$b") - $(field h2d "$a")))
  per="per token: $(echo "$dl" | awk '{printf "%.1f", $1 / 32}') launches, $(echo "$dw" | awk '{printf "%.2f", $1 / 32}') waits, $(echo "$dd" | awk '{printf "%.2f", $1 / 32}') downloads, $(echo "$du" | awk '{printf "%.2f", $1 / 32}') uploads"
  if [ -z "$bad" ]; then
    pass=$((pass + 1))
    echo "ok   $name: no allocation while decoding; $per"
  else
    fail=$((fail + 1))
    echo "FAIL $name:$bad over 32 decoded tokens; $per"
  fi
done <"$tmp/modes"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
