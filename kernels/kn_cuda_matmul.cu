// kernels/kn_cuda_matmul.cu — weight-side kernels: GEMV straight from the device blocks (decode), dequantisation
// into an fp32/fp16 buffer for cuBLAS (prefill), fp32 -> fp16 conversion, and get_rows.
#include <string.h>

#include "kernels/kn_cuda_common.cuh"

#define GEMV_WARPS 4 // rows per thread block (one warp per row)

// The matrices of one GEMV launch (kernel argument): rows [0, end0) of the launch are rows of matrix 0,
// [end0, end1) of matrix 1, [end1, end2) of matrix 2. With glu >= 0 (gate/up pair, n0 == n1) a block's warps
// 0, 1 take rows 2b, 2b + 1 of matrix 0 and warps 2, 3 the same rows of matrix 1; the block writes
// y0 = act(gate) * up and y1 = up.
struct gemv_args {
    const uint8_t *w0, *w1, *w2;
    float *y0, *y1, *y2;
    int64_t n0, end0, end1, end2;
    int glu;
};

struct gemv_pick {
    const uint8_t *w;
    float *y;
    int64_t N, row;
    bool ok;
};

__device__ __forceinline__ gemv_pick gemv_row(const gemv_args &a) {
    const int warp = threadIdx.x >> 5;
    gemv_pick p;
    int m;
    if (a.glu >= 0) {
        m = warp >> 1;
        p.row = (int64_t)blockIdx.x * (GEMV_WARPS / 2) + (warp & 1);
        p.N = a.n0;
        p.ok = p.row < a.n0;
    } else {
        const int64_t gr = (int64_t)blockIdx.x * GEMV_WARPS + warp;
        m = gr >= a.end0 ? (gr >= a.end1 ? 2 : 1) : 0;
        const int64_t lo = m == 0 ? 0 : m == 1 ? a.end0 : a.end1;
        const int64_t hi = m == 0 ? a.end0 : m == 1 ? a.end1 : a.end2;
        p.row = gr - lo;
        p.N = hi - lo;
        p.ok = gr < a.end2;
    }
    p.w = m == 0 ? a.w0 : m == 1 ? a.w1 : a.w2;
    p.y = m == 0 ? a.y0 : m == 1 ? a.y1 : a.y2;
    return p;
}

// Warp sums of acc into y (row pk.row of tokens t < nt), or the gate/up epilogue.
template <int T>
__device__ __forceinline__ void gemv_store(const gemv_args &a, const gemv_pick &pk, const float (&acc)[T], int nt) {
    const int lane = threadIdx.x & 31;
    float v[T];
#pragma unroll
    for (int t = 0; t < T; t++) v[t] = kn_warp_sum(acc[t]);
    if (a.glu < 0) {
        if (lane == 0 && pk.ok)
#pragma unroll
            for (int t = 0; t < T; t++)
                if (t < nt) pk.y[(size_t)t * pk.N + pk.row] = v[t];
        return;
    }
    __shared__ float gl[GEMV_WARPS][T];
    const int warp = threadIdx.x >> 5;
    if (lane == 0)
#pragma unroll
        for (int t = 0; t < T; t++) gl[warp][t] = v[t];
    __syncthreads();
    if (warp < 2 && pk.ok && lane < nt) {
        const float g = gl[warp][lane], u = gl[warp + 2][lane];
        const size_t i = (size_t)lane * pk.N + pk.row;
        a.y0[i] = kn_glu_act(g, u, a.glu == KN_ACT_GELU_TANH);
        a.y1[i] = u;
    }
}

// y(nt, N) = x(nt, K) · W(N, K)^T; one warp per row, lane l takes segments l, l + 32, ...; T >= nt.
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const gemv_args a, int64_t K, size_t row_bytes, const float *__restrict__ x, int nt) {
    const int lane = threadIdx.x & 31;
    const gemv_pick pk = gemv_row(a);
    if (!pk.ok && a.glu < 0) return;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    if (pk.ok) {
        const uint8_t *wr = pk.w + pk.row * row_bytes;
        const int64_t nseg = K / 32;
        constexpr int NRUN = kn_seg<TYPE>::NRUN, RL = 32 / NRUN;
#pragma unroll 2
        for (int64_t s = lane; s < nseg; s += 32) {
            float wv[32];
            int64_t base;
            kn_seg_deq<TYPE>(wr, s, wv, &base);
#pragma unroll
            for (int t = 0; t < T; t++) {
                if (t < nt) {
                    const float *xt = x + (size_t)t * K + base;
                    float dot = 0.0f;
#pragma unroll
                    for (int r = 0; r < NRUN; r++) {
#pragma unroll
                        for (int i = 0; i < RL; i += 4) {
                            float4 xv = __ldg((const float4 *)(xt + 32 * r + i));
                            dot = fmaf(wv[r * RL + i], xv.x, dot);
                            dot = fmaf(wv[r * RL + i + 1], xv.y, dot);
                            dot = fmaf(wv[r * RL + i + 2], xv.z, dot);
                            dot = fmaf(wv[r * RL + i + 3], xv.w, dot);
                        }
                    }
                    acc[t] += dot;
                }
            }
        }
    }
    gemv_store<T>(a, pk, acc, nt);
}

// The same for float-type rows of any length: lane l takes values l, l + 32, ...
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_elem_kernel(const gemv_args a, int64_t K, size_t row_bytes, const float *__restrict__ x, int nt) {
    const int lane = threadIdx.x & 31;
    const gemv_pick pk = gemv_row(a);
    if (!pk.ok && a.glu < 0) return;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    if (pk.ok) {
        const uint8_t *wr = pk.w + pk.row * row_bytes;
        for (int64_t k = lane; k < K; k += 32) {
            float wk = kn_elem<TYPE>(wr, k);
#pragma unroll
            for (int t = 0; t < T; t++)
                if (t < nt) acc[t] = fmaf(wk, __ldg(x + (size_t)t * K + k), acc[t]);
        }
    }
    gemv_store<T>(a, pk, acc, nt);
}

// Float-type rows with K a multiple of 256: lane l takes values [256 c + 8 l, +8) of chunk c, so every weight
// load of the warp is one contiguous 512 B (F16/BF16) or 1 KiB (F32) span; U chunks are loaded before use.
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_float_kernel(const gemv_args a, int64_t K, size_t row_bytes, const float *__restrict__ x, int nt) {
    constexpr int EB = TYPE == KN_F32 ? 4 : 2; // bytes per weight
    constexpr int U = EB == 2 ? 8 : 4;         // chunks in flight (8 KiB / 16 KiB per warp)
    const int lane = threadIdx.x & 31;
    const gemv_pick pk = gemv_row(a);
    if (!pk.ok && a.glu < 0) return;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    if (pk.ok) {
        const uint8_t *wr = pk.w + pk.row * row_bytes + (size_t)lane * 8 * EB;
        const int64_t nch = K / 256;
        for (int64_t c0 = 0; c0 < nch; c0 += U) {
            uint4 raw[U][EB / 2];
#pragma unroll
            for (int u = 0; u < U; u++)
                if (c0 + u < nch)
#pragma unroll
                    for (int h = 0; h < EB / 2; h++) raw[u][h] = kn_ld_u128(wr + (size_t)(c0 + u) * 256 * EB + 16 * h);
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (c0 + u >= nch) break;
                float wv[8];
                if constexpr (TYPE == KN_F32) {
                    const uint32_t r8[8] = {raw[u][0].x, raw[u][0].y, raw[u][0].z, raw[u][0].w,
                                            raw[u][1].x, raw[u][1].y, raw[u][1].z, raw[u][1].w};
#pragma unroll
                    for (int i = 0; i < 8; i++) wv[i] = __uint_as_float(r8[i]);
                } else {
                    const uint32_t r4[4] = {raw[u][0].x, raw[u][0].y, raw[u][0].z, raw[u][0].w};
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const uint16_t lo = (uint16_t)(r4[i] & 0xffffu), hi = (uint16_t)(r4[i] >> 16);
                        wv[2 * i] = TYPE == KN_F16 ? kn_h2f(lo) : kn_bf2f(lo);
                        wv[2 * i + 1] = TYPE == KN_F16 ? kn_h2f(hi) : kn_bf2f(hi);
                    }
                }
                const int64_t k0 = (c0 + u) * 256 + 8 * lane;
#pragma unroll
                for (int t = 0; t < T; t++) {
                    if (t < nt) {
                        const float4 xa = __ldg((const float4 *)(x + (size_t)t * K + k0));
                        const float4 xb = __ldg((const float4 *)(x + (size_t)t * K + k0 + 4));
                        float s = acc[t];
                        s = fmaf(wv[0], xa.x, s);
                        s = fmaf(wv[1], xa.y, s);
                        s = fmaf(wv[2], xa.z, s);
                        s = fmaf(wv[3], xa.w, s);
                        s = fmaf(wv[4], xb.x, s);
                        s = fmaf(wv[5], xb.y, s);
                        s = fmaf(wv[6], xb.z, s);
                        s = fmaf(wv[7], xb.w, s);
                        acc[t] = s;
                    }
                }
            }
        }
    }
    gemv_store<T>(a, pk, acc, nt);
}

template <int TYPE, int T>
static int gemv_launch(cudaStream_t st, const gemv_args &a, int64_t K, const float *x, int nt, int legacy) {
    const int64_t blocks = a.glu >= 0 ? (a.n0 + GEMV_WARPS / 2 - 1) / (GEMV_WARPS / 2)
                                      : (a.end2 + GEMV_WARPS - 1) / GEMV_WARPS;
    dim3 grid((unsigned)blocks);
    size_t rb = kn_cuda_row_bytes(TYPE, K);
    if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        if (K % 256 == 0 && !legacy) {
            KN_LAUNCH((gemv_float_kernel<TYPE, T>), grid, GEMV_WARPS * 32, 0, st, a, K, rb, x, nt);
            return kn_cuda_launch_status();
        }
    }
    if (K % 32 == 0)
        KN_LAUNCH((gemv_kernel<TYPE, T>), grid, GEMV_WARPS * 32, 0, st, a, K, rb, x, nt);
    else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16)
        KN_LAUNCH((gemv_elem_kernel<TYPE, T>), grid, GEMV_WARPS * 32, 0, st, a, K, rb, x, nt);
    else
        return (int)cudaErrorInvalidValue;
    return kn_cuda_launch_status();
}

template <int TYPE>
static int gemv_type(cudaStream_t st, const gemv_args &a, int64_t K, const float *x, int nt, int legacy) {
    if (nt == 1) return gemv_launch<TYPE, 1>(st, a, K, x, nt, legacy);
    if (nt == 2) return gemv_launch<TYPE, 2>(st, a, K, x, nt, legacy);
    if (nt <= 4) return gemv_launch<TYPE, 4>(st, a, K, x, nt, legacy);
    return gemv_launch<TYPE, 8>(st, a, K, x, nt, legacy);
}

extern "C" int kn_cuda_gemv_multi(void *stream, const struct kn_cuda_gemv_set *set, int type, int64_t K,
                                  const float *x, int n_tok, int legacy) {
    if (n_tok <= 0) return 0;
    if (n_tok > KN_CUDA_GEMV_MAX_TOK || set->n_mat < 1 || set->n_mat > KN_CUDA_GEMV_MAX_MATS)
        return (int)cudaErrorInvalidValue;
    if (set->glu >= 0 && (set->n_mat != 2 || set->n[0] != set->n[1])) return (int)cudaErrorInvalidValue;
    gemv_args a;
    const int nm = set->n_mat;
    a.w0 = (const uint8_t *)set->w[0];
    a.w1 = (const uint8_t *)(nm > 1 ? set->w[1] : set->w[0]);
    a.w2 = (const uint8_t *)(nm > 2 ? set->w[2] : set->w[0]);
    a.y0 = set->y[0];
    a.y1 = nm > 1 ? set->y[1] : set->y[0];
    a.y2 = nm > 2 ? set->y[2] : set->y[0];
    a.n0 = set->n[0];
    a.end0 = set->n[0];
    a.end1 = a.end0 + (nm > 1 ? set->n[1] : 0);
    a.end2 = a.end1 + (nm > 2 ? set->n[2] : 0);
    a.glu = set->glu;
    if (a.end2 <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
#define GEMV_CALL(TY) return gemv_type<TY>(st, a, K, x, n_tok, legacy)
    KN_TYPE_DISPATCH(type, GEMV_CALL)
#undef GEMV_CALL
    return 0;
}

extern "C" int kn_cuda_gemv(void *stream, float *y, const void *w, int type, int64_t N, int64_t K, const float *x,
                            int n_tok, int legacy) {
    if (n_tok <= 0 || N <= 0) return 0;
    struct kn_cuda_gemv_set set;
    memset(&set, 0, sizeof set);
    set.w[0] = w;
    set.y[0] = y;
    set.n[0] = N;
    set.n_mat = 1;
    set.glu = -1;
    return kn_cuda_gemv_multi(stream, &set, type, K, x, n_tok, legacy);
}

// ---- dequantisation --------------------------------------------------------------------------------------

template <typename OUT> __device__ __forceinline__ OUT kn_out(float v);
template <> __device__ __forceinline__ float kn_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half kn_out<__half>(float v) { return __float2half_rn(v); }

// out(n_rows, K): one thread per 32-value segment.
template <int TYPE, typename OUT>
__global__ void dequant_kernel(OUT *__restrict__ out, const uint8_t *__restrict__ w, int64_t n_rows, int64_t K,
                               size_t row_bytes) {
    const int64_t nseg = K / 32;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rows * nseg) return;
    const int64_t r = i / nseg, s = i % nseg;
    constexpr int NRUN = kn_seg<TYPE>::NRUN, RL = 32 / NRUN;
    float wv[32];
    int64_t base;
    kn_seg_deq<TYPE>(w + r * row_bytes, s, wv, &base);
    OUT *o = out + r * K + base;
#pragma unroll
    for (int q = 0; q < NRUN; q++)
#pragma unroll
        for (int k = 0; k < RL; k++) o[32 * q + k] = kn_out<OUT>(wv[q * RL + k]);
}

template <int TYPE, typename OUT>
__global__ void dequant_elem_kernel(OUT *__restrict__ out, const uint8_t *__restrict__ w, int64_t n_rows, int64_t K,
                                    size_t row_bytes) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rows * K) return;
    const int64_t r = i / K, k = i % K;
    out[i] = kn_out<OUT>(kn_elem<TYPE>(w + r * row_bytes, k));
}

template <int TYPE, typename OUT>
static int dequant_launch(cudaStream_t st, OUT *out, const void *w, int64_t n_rows, int64_t K) {
    size_t rb = kn_cuda_row_bytes(TYPE, K);
    if (K % 32 == 0) {
        int64_t n = n_rows * (K / 32);
        KN_LAUNCH((dequant_kernel<TYPE, OUT>), (unsigned)((n + 255) / 256), 256, 0, st, out, (const uint8_t *)w, n_rows,
                  K, rb);
    } else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        int64_t n = n_rows * K;
        KN_LAUNCH((dequant_elem_kernel<TYPE, OUT>), (unsigned)((n + 255) / 256), 256, 0, st, out, (const uint8_t *)w,
                  n_rows, K, rb);
    } else {
        return (int)cudaErrorInvalidValue;
    }
    return kn_cuda_launch_status();
}

extern "C" int kn_cuda_dequant(void *stream, void *out, int half_out, const void *w, int type, int64_t n_rows,
                               int64_t K) {
    if (n_rows <= 0 || K <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    if (half_out) {
#define DQ_CALL(TY) return dequant_launch<TY, __half>(st, (__half *)out, w, n_rows, K)
        KN_TYPE_DISPATCH(type, DQ_CALL)
#undef DQ_CALL
    } else {
#define DQ_CALL(TY) return dequant_launch<TY, float>(st, (float *)out, w, n_rows, K)
        KN_TYPE_DISPATCH(type, DQ_CALL)
#undef DQ_CALL
    }
    return 0;
}

__global__ void to_half_kernel(__half *__restrict__ out, const float *__restrict__ x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half_rn(x[i]);
}

extern "C" int kn_cuda_to_half(void *stream, void *out, const float *x, size_t n) {
    if (!n) return 0;
    KN_LAUNCH((to_half_kernel), (unsigned)((n + 255) / 256), 256, 0, (cudaStream_t)stream, (__half *)out, x, n);
    return kn_cuda_launch_status();
}

// ---- get_rows --------------------------------------------------------------------------------------------

// y(n, K) = rows ids(n) of W; one thread per segment (grid.y = row of the batch).
template <int TYPE>
__global__ void get_rows_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, int64_t K, size_t row_bytes,
                                const int32_t *__restrict__ ids) {
    const int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    if (s >= K / 32) return;
    constexpr int NRUN = kn_seg<TYPE>::NRUN, RL = 32 / NRUN;
    float wv[32];
    int64_t base;
    kn_seg_deq<TYPE>(w + (size_t)ids[i] * row_bytes, s, wv, &base);
    float *o = y + (size_t)i * K + base;
#pragma unroll
    for (int q = 0; q < NRUN; q++)
#pragma unroll
        for (int k = 0; k < RL; k++) o[32 * q + k] = wv[q * RL + k];
}

template <int TYPE>
__global__ void get_rows_elem_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, int64_t K,
                                     size_t row_bytes, const int32_t *__restrict__ ids) {
    const int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    if (k >= K) return;
    y[(size_t)i * K + k] = kn_elem<TYPE>(w + (size_t)ids[i] * row_bytes, k);
}

template <int TYPE>
static int get_rows_launch(cudaStream_t st, float *y, const void *w, int64_t K, const int32_t *ids, int n) {
    size_t rb = kn_cuda_row_bytes(TYPE, K);
    if (K % 32 == 0) {
        dim3 grid((unsigned)((K / 32 + 127) / 128), (unsigned)n);
        KN_LAUNCH((get_rows_kernel<TYPE>), grid, 128, 0, st, y, (const uint8_t *)w, K, rb, ids);
    } else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        dim3 grid((unsigned)((K + 127) / 128), (unsigned)n);
        KN_LAUNCH((get_rows_elem_kernel<TYPE>), grid, 128, 0, st, y, (const uint8_t *)w, K, rb, ids);
    } else {
        return (int)cudaErrorInvalidValue;
    }
    return kn_cuda_launch_status();
}

extern "C" int kn_cuda_get_rows(void *stream, float *y, const void *w, int type, int64_t K, const int32_t *ids,
                                int n) {
    if (n <= 0 || K <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    for (int i0 = 0; i0 < n; i0 += 65535) { // grid.y limit
        const int m = n - i0 < 65535 ? n - i0 : 65535;
        float *yi = y + (size_t)i0 * K;
        const int32_t *ii = ids + i0;
        int rc = 0;
#define GR_CALL(TY) rc = get_rows_launch<TY>(st, yi, w, K, ii, m)
        KN_TYPE_DISPATCH(type, GR_CALL)
#undef GR_CALL
        if (rc) return rc;
    }
    return 0;
}
