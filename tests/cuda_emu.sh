#!/bin/sh
# tests/cuda_emu.sh — the CUDA backend's GPU tests on the CPU emulation of the CUDA execution model
# (tests/gpu/emu/, the `CUDA=emu` build that `make test` adds when the CUDA headers are installed): every op
# against its CPU twin with each block's threads scheduled in forward and in reverse order (a missing barrier
# shows in one of them), the emulator's own checks (tests/gpu/emu/test_cuemu.cc), and greedy generation on
# --device cuda against the CPU backend for every cache mode, and the runtime traffic of decoding (no allocation,
# bounded host waits per token: tests/gpu/emu/decode_traffic.sh).
# Prints "N passed, N failed" (one summary over the five runs).
set -u
emu=${KVCHAT_EMU_BUILD:-build/cuemu}
if [ ! -x "$emu/kvchat" ] || [ ! -x "$emu/tests/gpu/test_ops" ] || [ ! -x "$emu/tests/gpu/emu/test_cuemu" ]; then
  echo "SKIP: $emu not built (the CUDA headers were not found; make test-emu builds it)"
  echo "0 passed, 0 failed"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvchat-emu.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
printf '#!/bin/sh\nKN_EMU_ORDER=reverse exec "%s" "$@"\n' "$emu/tests/gpu/test_ops" >"$tmp/test_ops_reverse_order"
printf '#!/bin/sh\nexec sh tests/gpu/emu/decode_traffic.sh "%s"\n' "$emu" >"$tmp/decode_traffic"
chmod +x "$tmp/test_ops_reverse_order" "$tmp/decode_traffic"
# the default model's 262144-token vocabulary makes its generation runs ~25 min here: KVCHAT_EMU_GEMMA=1 adds them
GEN_MATCH_DEFAULT_MODEL=${KVCHAT_EMU_GEMMA:-0} KVCHAT_BIN=$emu/kvchat sh tests/run_tests.sh "$emu" \
  "$emu/tests/gpu/emu/test_cuemu" "$emu/tests/gpu/test_ops" "$tmp/test_ops_reverse_order" tests/gpu/gen_match.sh \
  "$tmp/decode_traffic"
