// kernels/kn_cuda_common.cuh — device helpers shared by the .cu files: launch checks, warp reductions and the
// dequantisation of one 32-value segment of a weight row in every supported type (device block layouts of
// kernels/kn_cuda_ops.h).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/kn_cuda_ops.h"
#include "kernels/kn_types.h"

#define KN_FULL_MASK 0xffffffffu

// Kernel launch and dynamic shared memory, spelled so that the CPU emulation of the CUDA execution model
// (tests/gpu/emu/cuemu.h, the `CUDA=emu` build) can run the same source: KN_LAUNCH((kernel<T>), grid, block,
// smem, stream, args...) and KN_DYN_SMEM(float, name);
#define KN_UNPAREN(...) __VA_ARGS__
#ifdef KN_CUDA_EMU
#define KN_LAUNCH(k, g, b, s, st, ...) KN_EMU_LAUNCH(#k, KN_UNPAREN k, g, b, s, st, __VA_ARGS__)
#define KN_DYN_SMEM(type, name) KN_EMU_DYN_SMEM(type, name)
#else
#define KN_LAUNCH(k, g, b, s, st, ...) KN_UNPAREN k<<<(g), (b), (s), (st)>>>(__VA_ARGS__)
#define KN_DYN_SMEM(type, name) extern __shared__ type name[]
#endif

static inline int kn_cuda_launch_status(void) { return (int)cudaGetLastError(); }

__device__ __forceinline__ float kn_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(KN_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float kn_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(KN_FULL_MASK, v, o));
    return v;
}

// act(g) * u of the gated activations (gelu: the tanh approximation).
__device__ __forceinline__ float kn_glu_act(float g, float u, int gelu) {
    if (!gelu) return g / (1.0f + expf(-g)) * u;
    const float k0 = 0.7978845608028654f; // sqrt(2/pi)
    const float t = k0 * (g + 0.044715f * g * g * g);
    return 0.5f * g * (1.0f + tanhf(t)) * u;
}

__device__ __forceinline__ float kn_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float kn_bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t kn_ld_u16(const uint8_t *p) { return *(const uint16_t *)p; }
__device__ __forceinline__ uint32_t kn_ld_u32(const uint8_t *p) { return __ldg((const unsigned int *)p); }
__device__ __forceinline__ uint4 kn_ld_u128(const uint8_t *p) { return __ldg((const uint4 *)p); }

// ---- segments --------------------------------------------------------------------------------------------
// A weight row (K values, K a multiple of 32) is read as K/32 segments of 32 values. kn_seg_deq<TYPE> writes
// segment s's values into w[32] as NRUN runs of 32/NRUN consecutive row positions; run r starts at row
// position base + 32 * r.
template <int TYPE> struct kn_seg {
    static constexpr int NRUN = 1;
};
template <> struct kn_seg<KN_Q4_K> {
    static constexpr int NRUN = 2;
};
template <> struct kn_seg<KN_Q5_K> {
    static constexpr int NRUN = 2;
};
template <> struct kn_seg<KN_Q6_K> {
    static constexpr int NRUN = 4;
};

// 6-bit scale and min j (0..7) of a Q4_K/Q5_K super-block.
__device__ __forceinline__ void kn_kq_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

__device__ __forceinline__ void kn_nib16(uint4 q, int shift, float *out, float d, float m) {
    uint32_t wv[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 16; i++) out[i] = fmaf((float)((wv[i / 4] >> (8 * (i % 4) + shift)) & 15u), d, m);
}

template <int TYPE>
__device__ __forceinline__ void kn_seg_deq(const uint8_t *__restrict__ row, int64_t s, float *w, int64_t *base) {
    if constexpr (TYPE == KN_F32) {
        const float4 *p = (const float4 *)(row + s * 128);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = __ldg(p + i);
            w[4 * i] = v.x;
            w[4 * i + 1] = v.y;
            w[4 * i + 2] = v.z;
            w[4 * i + 3] = v.w;
        }
        *base = s * 32;
    } else if constexpr (TYPE == KN_F16 || TYPE == KN_BF16) {
        const uint8_t *p = row + s * 64;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v = kn_ld_u128(p + 16 * i);
            uint32_t wv[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                uint16_t lo = (uint16_t)(wv[k] & 0xffffu), hi = (uint16_t)(wv[k] >> 16);
                w[8 * i + 2 * k] = TYPE == KN_F16 ? kn_h2f(lo) : kn_bf2f(lo);
                w[8 * i + 2 * k + 1] = TYPE == KN_F16 ? kn_h2f(hi) : kn_bf2f(hi);
            }
        }
        *base = s * 32;
    } else if constexpr (TYPE == KN_Q4_0 || TYPE == KN_Q4_1) {
        const uint8_t *b = row + s * 20;
        float d, m;
        if (TYPE == KN_Q4_0) {
            d = kn_h2f(kn_ld_u16(b + 2));
            m = -8.0f * d;
        } else {
            uint32_t dm = kn_ld_u32(b);
            d = kn_h2f((uint16_t)(dm & 0xffffu));
            m = kn_h2f((uint16_t)(dm >> 16));
        }
        uint4 q = make_uint4(kn_ld_u32(b + 4), kn_ld_u32(b + 8), kn_ld_u32(b + 12), kn_ld_u32(b + 16));
        if (TYPE == KN_Q4_0) {
            // (q - 8) * d exactly as the reference: integer subtraction first
            uint32_t wv[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
            for (int i = 0; i < 16; i++) {
                int c = (int)((wv[i / 4] >> (8 * (i % 4))) & 255u);
                w[i] = (float)((c & 15) - 8) * d;
                w[i + 16] = (float)((c >> 4) - 8) * d;
            }
        } else {
            kn_nib16(q, 0, w, d, m);
            kn_nib16(q, 4, w + 16, d, m);
        }
        *base = s * 32;
    } else if constexpr (TYPE == KN_Q5_0 || TYPE == KN_Q5_1) {
        const uint8_t *b = row + s * 24;
        float d, m = 0.0f;
        if (TYPE == KN_Q5_0) {
            d = kn_h2f(kn_ld_u16(b + 2));
        } else {
            uint32_t dm = kn_ld_u32(b);
            d = kn_h2f((uint16_t)(dm & 0xffffu));
            m = kn_h2f((uint16_t)(dm >> 16));
        }
        uint32_t qh = kn_ld_u32(b + 4);
        uint32_t wv[4] = {kn_ld_u32(b + 8), kn_ld_u32(b + 12), kn_ld_u32(b + 16), kn_ld_u32(b + 20)};
        const int off = TYPE == KN_Q5_0 ? 16 : 0;
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int c = (int)((wv[i / 4] >> (8 * (i % 4))) & 255u);
            int q0 = (c & 15) | (int)(((qh >> i) & 1u) << 4);
            int q1 = (c >> 4) | (int)(((qh >> (i + 16)) & 1u) << 4);
            w[i] = (float)(q0 - off) * d + m;
            w[i + 16] = (float)(q1 - off) * d + m;
        }
        *base = s * 32;
    } else if constexpr (TYPE == KN_Q8_0) {
        const uint8_t *b = row + s * 36;
        float d = kn_h2f(kn_ld_u16(b + 2));
#pragma unroll
        for (int i = 0; i < 8; i++) {
            uint32_t v = kn_ld_u32(b + 4 + 4 * i);
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = (float)(int8_t)((v >> (8 * k)) & 255u) * d;
        }
        *base = s * 32;
    } else if constexpr (TYPE == KN_Q4_K || TYPE == KN_Q5_K) {
        const int64_t u = s >> 3;
        const int j = (int)(s & 7), c = j >> 1, p = j & 1;
        const uint8_t *b = row + u * (TYPE == KN_Q4_K ? 144 : 176);
        uint32_t dd = kn_ld_u32(b);
        float d = kn_h2f((uint16_t)(dd & 0xffffu)), dmin = kn_h2f((uint16_t)(dd >> 16));
        uint32_t s0 = kn_ld_u32(b + 4), s1 = kn_ld_u32(b + 8), s2 = kn_ld_u32(b + 12);
        uint8_t sc8[12];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            sc8[k] = (uint8_t)(s0 >> (8 * k));
            sc8[4 + k] = (uint8_t)(s1 >> (8 * k));
            sc8[8 + k] = (uint8_t)(s2 >> (8 * k));
        }
        int sc0, m0, sc1, m1;
        kn_kq_scale_min(sc8, 2 * c, &sc0, &m0);
        kn_kq_scale_min(sc8, 2 * c + 1, &sc1, &m1);
        float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
        if (TYPE == KN_Q4_K) {
            uint4 q = kn_ld_u128(b + 16 + 32 * c + 16 * p);
            kn_nib16(q, 0, w, d0, -mm0);
            kn_nib16(q, 4, w + 16, d1, -mm1);
        } else {
            uint4 q = kn_ld_u128(b + 48 + 32 * c + 16 * p);
            uint4 h = kn_ld_u128(b + 16 + 16 * p);
            uint32_t qv[4] = {q.x, q.y, q.z, q.w}, hv[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
            for (int i = 0; i < 16; i++) {
                uint32_t qb = (qv[i / 4] >> (8 * (i % 4))) & 255u, hb = (hv[i / 4] >> (8 * (i % 4))) & 255u;
                int q0 = (int)((qb & 15u) | (((hb >> (2 * c)) & 1u) << 4));
                int q1 = (int)((qb >> 4) | (((hb >> (2 * c + 1)) & 1u) << 4));
                w[i] = fmaf((float)q0, d0, -mm0);
                w[i + 16] = fmaf((float)q1, d1, -mm1);
            }
        }
        *base = u * 256 + 64 * c + 16 * p;
    } else if constexpr (TYPE == KN_Q6_K) {
        const int64_t u = s >> 3;
        const int j = (int)(s & 7), h = j >> 2, l0 = 8 * (j & 3), is = (j & 3) >> 1;
        const uint8_t *b = row + u * 212;
        float d = kn_h2f(kn_ld_u16(b + 208));
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
        float ds[4];
#pragma unroll
        for (int k = 0; k < 4; k++) ds[k] = d * (float)sc[is + 2 * k];
        uint32_t la[2] = {kn_ld_u32(b + 64 * h + l0), kn_ld_u32(b + 64 * h + l0 + 4)};
        uint32_t lb[2] = {kn_ld_u32(b + 64 * h + 32 + l0), kn_ld_u32(b + 64 * h + 32 + l0 + 4)};
        uint32_t hh[2] = {kn_ld_u32(b + 128 + 32 * h + l0), kn_ld_u32(b + 128 + 32 * h + l0 + 4)};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            uint32_t a = (la[i / 4] >> (8 * (i % 4))) & 255u, bb = (lb[i / 4] >> (8 * (i % 4))) & 255u;
            uint32_t q = (hh[i / 4] >> (8 * (i % 4))) & 255u;
            int q1 = (int)((a & 15u) | ((q & 3u) << 4)) - 32;
            int q2 = (int)((bb & 15u) | (((q >> 2) & 3u) << 4)) - 32;
            int q3 = (int)((a >> 4) | (((q >> 4) & 3u) << 4)) - 32;
            int q4 = (int)((bb >> 4) | (((q >> 6) & 3u) << 4)) - 32;
            w[i] = ds[0] * (float)q1;
            w[8 + i] = ds[1] * (float)q2;
            w[16 + i] = ds[2] * (float)q3;
            w[24 + i] = ds[3] * (float)q4;
        }
        *base = u * 256 + 128 * h + l0;
    }
}

// One value of a float-type row (the path for rows whose length is not a multiple of 32).
template <int TYPE> __device__ __forceinline__ float kn_elem(const uint8_t *row, int64_t k) {
    if constexpr (TYPE == KN_F32) return __ldg((const float *)row + k);
    else if constexpr (TYPE == KN_F16) return kn_h2f(((const uint16_t *)row)[k]);
    else return kn_bf2f(((const uint16_t *)row)[k]);
}

// Runs `f.template operator()<TYPE>()`-style dispatch: calls F::run<TYPE>(args...) for the runtime type.
#define KN_TYPE_DISPATCH(type, CALL)                                                                             \
    switch (type) {                                                                                              \
    case KN_F32: CALL(KN_F32); break;                                                                            \
    case KN_F16: CALL(KN_F16); break;                                                                            \
    case KN_BF16: CALL(KN_BF16); break;                                                                          \
    case KN_Q4_0: CALL(KN_Q4_0); break;                                                                          \
    case KN_Q4_1: CALL(KN_Q4_1); break;                                                                          \
    case KN_Q5_0: CALL(KN_Q5_0); break;                                                                          \
    case KN_Q5_1: CALL(KN_Q5_1); break;                                                                          \
    case KN_Q8_0: CALL(KN_Q8_0); break;                                                                          \
    case KN_Q4_K: CALL(KN_Q4_K); break;                                                                          \
    case KN_Q5_K: CALL(KN_Q5_K); break;                                                                          \
    case KN_Q6_K: CALL(KN_Q6_K); break;                                                                          \
    default: return (int)cudaErrorInvalidValue;                                                                  \
    }
