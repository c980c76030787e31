#!/bin/sh
# tests/kernel_prefetch.sh — the CPU matmul kernels really contain their software prefetches. GCC 12 deletes
# calls to a helper whose only effect is __builtin_prefetch (it marks it "looping const"), which silently cost
# decode ~40% until the helpers were made always_inline (kernels/kn_cpu_impl.h); this catches a regression.
# Reads the objects next to $KVCHAT_BIN (the build directory).
build=$(dirname "${KVCHAT_BIN:-build/cpu/kvchat}")
pass=0; fail=0
if ! command -v objdump >/dev/null 2>&1; then
    echo "SKIP: objdump not installed"
    echo "0 passed, 0 failed"
    exit 0
fi
for f in kn_cpu_q8 kn_cpu_matmul kn_cpu_gemm8; do
    o="$build/kernels/$f.o"
    if [ ! -f "$o" ]; then
        echo "FAIL: $o missing"; fail=$((fail + 1)); continue
    fi
    dis=$(objdump -d "$o")
    # a build without the SIMD kernels (or without AVX-512 VNNI for gemm8) has nothing to prefetch for
    if ! printf '%s\n' "$dis" | grep -qE 'vpmaddubsw|vpdpbusd|vfmadd'; then
        echo "SKIP: $f.o has no SIMD kernels in this build"
        continue
    fi
    n=$(printf '%s\n' "$dis" | grep -c 'prefetcht0')
    if [ "$n" -gt 0 ]; then
        pass=$((pass + 1))
    else
        echo "FAIL: $f.o has SIMD kernels but no prefetcht0 (the compiler dropped the prefetch helper)"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
