#!/bin/sh
# tests/gpu/bundle.sh — `make gpu-bundle`: what `make test-gpu` and `make bench-gpu` run, built here for a GPU
# machine that has the NVIDIA driver and CUDA's libraries but not this project's build dependencies
# (libsentencepiece, ncurses; nothing can be installed there). Writes .gpubundle/bundle.tar.xz (git-ignored):
#   build/   kvchat, mkmodel, tests/gpu/test_ops, tests/gpu/gpu_info (CUDA build, -march=x86-64-v3, stripped)
#   lib/     the shared libraries they need beyond glibc, libstdc++ and CUDA's own (found with ldd)
#   data/    models/stories260K (from ../shared, when present) for tests/gpu/gen_match.sh
# On the GPU machine, from the repository root: `sh tests/gpu/device_run.sh test|bench|all` (it unpacks the
# bundle, points LD_LIBRARY_PATH at lib/ and runs the same scripts as make test-gpu / make bench-gpu).
set -eu
b=build/gpubundle
out=.gpubundle
stage=$(mktemp -d "${TMPDIR:-/tmp}/kvchat-bundle.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
command -v nvcc >/dev/null 2>&1 || { echo "gpu-bundle: nvcc not found (the bundle is a CUDA build)" >&2; exit 1; }

# x86-64-v3 (AVX2, FMA, F16C): the GPU machine's processor is another model than this one
make --no-print-directory CUDA=1 BUILD=$b MARCH=-march=x86-64-v3 \
  $b/kvchat $b/mkmodel $b/tests/gpu/test_ops $b/tests/gpu/gpu_info

mkdir -p "$stage/build/tests/gpu" "$stage/lib" "$stage/data/models"
for f in kvchat mkmodel tests/gpu/test_ops tests/gpu/gpu_info; do
  strip -o "$stage/build/$f" "$b/$f"
done
# libraries outside glibc / libstdc++ / libgcc / CUDA (those are on the GPU machine)
for f in kvchat mkmodel tests/gpu/test_ops tests/gpu/gpu_info; do
  ldd "$b/$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libstdc++.so* | libgcc_s.so*) ;;
    libcuda* | libcublas* | libnvrtc* | libnvJitLink*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done
shared=${KVCHAT_SHARED:-../shared}
if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
  mkdir -p "$stage/data/models/stories260K"
  cp "$shared/models/stories260K/stories260K.bin" "$shared/models/stories260K/tok512.model" \
    "$stage/data/models/stories260K/"
else
  echo "gpu-bundle: $shared/models/stories260K absent: gen_match.sh will skip stories260K" >&2
fi
mkdir -p "$out"
tar -C "$stage" -cJf "$out/bundle.tar.xz.tmp" build lib data
mv "$out/bundle.tar.xz.tmp" "$out/bundle.tar.xz"
echo "gpu-bundle: $out/bundle.tar.xz ($(wc -c <"$out/bundle.tar.xz") bytes; libraries: $(ls "$stage/lib" | tr '\n' ' '))"
