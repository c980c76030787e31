#!/bin/sh
# tests/gpu/device_run.sh test|bench|all — runs the GPU tests and/or benchmarks from .gpubundle/bundle.tar.xz
# (`make gpu-bundle`, built on a development machine) on a GPU machine that cannot build the project itself.
# test:  test_ops (every CUDA op against its CPU twin) and gen_match.sh (greedy CUDA == CPU, compute-sanitizer),
#        the same as `make test-gpu`, ending with "N passed, N failed".
# bench: tests/tools/bench_gpu.sh, as `make bench-gpu` (BENCH_PLAN etc. pass through).
# Logs and the benchmark's JSON lines go to $OUT when it is set (the device tool's output folder), else /tmp.
set -u
what=${1:-all}
bundle=.gpubundle/bundle.tar.xz
dest=${KVCHAT_BUNDLE_DIR:-/tmp/kvchat-bundle}
logs=${OUT:-/tmp}
[ -f "$bundle" ] || { echo "device_run: $bundle missing (make gpu-bundle on the development machine)" >&2; exit 1; }
rm -rf "$dest" && mkdir -p "$dest" && tar -C "$dest" -xJf "$bundle" || { echo "device_run: cannot unpack $bundle" >&2; exit 1; }

# CUDA's libraries: the toolkit's lib64, else wherever libcublas.so.* lies (a pip wheel, say)
cudalib=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  if ls "$d"/libcublas.so* >/dev/null 2>&1; then cudalib=$d; break; fi
done
if [ -z "$cudalib" ]; then
  f=$(find / -xdev -name 'libcublas.so.*' 2>/dev/null | head -n 1)
  [ -n "$f" ] && cudalib=$(dirname "$f")
fi
export LD_LIBRARY_PATH="$dest/lib${cudalib:+:$cudalib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVCHAT_SHARED="$dest/data"
export KVCHAT_BIN="$dest/build/kvchat"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
"$dest/build/tests/gpu/gpu_info" || { echo "device_run: no usable CUDA device (gpu_info failed)" >&2; exit 1; }

rc=0
if [ "$what" = test ] || [ "$what" = all ]; then
  sh tests/run_tests.sh "$dest/build" "$dest/build/tests/gpu/test_ops" tests/gpu/gen_match.sh 2>&1 |
    tee "$logs/test-gpu.log"
  tail -n 1 "$logs/test-gpu.log" | grep -q ' 0 failed$' || rc=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  BUILD="$dest/build" BENCH_OUT="$logs/bench-gpu.jsonl" sh tests/tools/bench_gpu.sh 2>&1 | tee "$logs/bench-gpu.log"
fi
exit $rc
