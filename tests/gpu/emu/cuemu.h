// tests/gpu/emu/cuemu.h — the CUDA execution model on the CPU, for running kernels/*.cu without a GPU: force-
// included (g++ -include) into every .cu of the `CUDA=emu` build. Each CUDA thread of a block is a fiber;
// __syncthreads and the warp intrinsics are barriers between fibers; launches are queued on the (single,
// in-order) emulated stream and run at synchronisation points, as a GPU runs them after the host moved on.
// What it proves: indexing, reductions, barriers, warp exchanges, shared-memory use and host/device
// ordering of the CUDA code. What it cannot: timing, the memory model of real concurrent threads, occupancy.
#pragma once
#ifdef __CUDACC__
#error "cuemu.h is for host compilers only"
#endif

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers ----------------------------------------------------------------------------------------
// Blocks run one after another on one OS thread, so a function-local static is exactly one block's shared
// memory (each launch poisons nothing in it: stale values from the previous block stay, as on a GPU).
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __constant__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace kn_emu {

const uint3 &cur_tid();
extern uint3 block_idx;
extern dim3 block_dim, grid_dim;

// __syncthreads and one warp-wide exchange step. `site` names the source line of the call: all threads of a
// block (lanes of a warp) must meet at the same one (a compiler may duplicate a call, never its line).
void sync_block(int site);
uint64_t warp_exchange(int site, uint32_t mask, uint64_t v, int src_lane, uint32_t *ballot);
int lane_id();
void reset(); // tests of the emulator only: forget a sticky fault and any queued work
void *dyn_smem();                                   // this block's dynamic shared memory

// Kernel launches: the argument tuple is copied at launch (as the CUDA runtime copies kernel parameters).
// Pointer arguments must point into device allocations (or be NULL): a host pointer reaching a kernel is
// reported, as the illegal address it would be on a GPU.
int check_kernel_ptr(const char *kernel, int arg, const void *p);
void launch(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            std::function<void()> body);

template <class T> inline int check_arg(const char *name, int i, const T &v) {
    if constexpr (std::is_pointer_v<T>) return check_kernel_ptr(name, i, (const void *)v);
    else return 0;
}

template <class... P, class... A>
void launch_kernel(void (*k)(P...), const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                   A &&...a) {
    std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
    int bad = 0, i = 0;
    std::apply([&](const auto &...v) { ((bad |= check_arg(name, i++, v)), ...); }, args);
    if (bad) return;
    launch((const void *)k, name, grid, block, smem, st, [k, args]() { std::apply(k, args); });
}

template <class T> inline T bits_to(uint64_t b) {
    static_assert(sizeof(T) <= 8, "warp exchange of values wider than 8 bytes");
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
template <class T> inline uint64_t to_bits(T v) {
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}

} // namespace kn_emu

#define KN_EMU_LAUNCH(name, k, g, b, s, st, ...)                                                                 \
    kn_emu::launch_kernel(k, name, dim3(g), dim3(b), (size_t)(s), (st), __VA_ARGS__)

#define threadIdx (kn_emu::cur_tid())
#define blockIdx (kn_emu::block_idx)
#define blockDim (kn_emu::block_dim)
#define gridDim (kn_emu::grid_dim)

// ---- intrinsics ----------------------------------------------------------------------------------------
#define __syncthreads() kn_emu::sync_block(__LINE__)
#define __syncwarp(...) kn_emu::syncwarp_at{__LINE__}(__VA_ARGS__)
#define __shfl_xor_sync(...) kn_emu::shfl_xor(__LINE__, __VA_ARGS__)
#define __shfl_sync(...) kn_emu::shfl(__LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) kn_emu::shfl_down(__LINE__, __VA_ARGS__)
#define __ballot_sync(...) kn_emu::ballot(__LINE__, __VA_ARGS__)
#define __any_sync(m, p) (kn_emu::ballot(__LINE__, (m), (p)) != 0)
#define __all_sync(m, p) (kn_emu::ballot(__LINE__, (m), (p)) == (unsigned)(m))
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace kn_emu {
struct syncwarp_at { // __syncwarp(mask = all lanes)
    int site;
    void operator()(unsigned mask = 0xffffffffu) const { (void)warp_exchange(site, mask, 0, lane_id(), nullptr); }
};
template <class T> inline T shfl_xor(int site, unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = lane_id();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane; // outside the lane's segment: own value
    return bits_to<T>(warp_exchange(site, mask, to_bits(v), src, nullptr));
}
template <class T> inline T shfl(int site, unsigned mask, T v, int src_lane, int width = 32) {
    const int lane = lane_id();
    const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
    return bits_to<T>(warp_exchange(site, mask, to_bits(v), src, nullptr));
}
template <class T> inline T shfl_down(int site, unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = lane_id();
    int src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return bits_to<T>(warp_exchange(site, mask, to_bits(v), src, nullptr));
}
inline unsigned ballot(int site, unsigned mask, int pred) {
    uint32_t b = 0;
    (void)warp_exchange(site, mask, pred != 0, lane_id(), &b);
    return b;
}
} // namespace kn_emu

template <class T> inline T __ldg(const T *p) { return *p; }

// One block runs at a time, so the atomics need no hardware atomicity.
template <class T> inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> inline T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <class T> inline T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}

inline float __uint_as_float(unsigned u) { return kn_emu::bits_to<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)kn_emu::to_bits(f); }
inline float __int_as_float(int u) { return kn_emu::bits_to<float>((uint32_t)u); }
inline int __float_as_int(float f) { return (int)(uint32_t)kn_emu::to_bits(f); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __saturatef(float a) { return a < 0.0f ? 0.0f : a > 1.0f ? 1.0f : a; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }

// Dynamic shared memory: `KN_DYN_SMEM(float, smem);` in the kernels.
#define KN_EMU_DYN_SMEM(type, name) type *name = (type *)kn_emu::dyn_smem()

// The integer and float min/max overloads device code has without std::.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// Cache-hinted loads and stores: plain accesses here.
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldca(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline void __stcg(T *p, T v) { *p = v; }
template <class T> inline void __stcs(T *p, T v) { *p = v; }

// Round-to-nearest single operations that are never fused (the emulation builds with -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
