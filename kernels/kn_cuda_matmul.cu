// kernels/kn_cuda_matmul.cu — weight-side kernels: GEMV straight from the device blocks (decode), dequantisation
// into an fp32/fp16 buffer for cuBLAS (prefill), fp32 -> fp16 conversion, and get_rows.
#include "kernels/kn_cuda_common.cuh"

#define GEMV_WARPS 4 // rows per thread block (one warp per row)

// y(nt, N) = x(nt, K) · W(N, K)^T; one warp per row, lane l takes segments l, l + 32, ...; T >= nt.
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, int64_t N, int64_t K, size_t row_bytes,
                const float *__restrict__ x, int nt) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const uint8_t *wr = w + row * row_bytes;
    const int64_t nseg = K / 32;
    constexpr int NRUN = kn_seg<TYPE>::NRUN, RL = 32 / NRUN;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
#pragma unroll 2
    for (int64_t s = lane; s < nseg; s += 32) {
        float wv[32];
        int64_t base;
        kn_seg_deq<TYPE>(wr, s, wv, &base);
#pragma unroll
        for (int t = 0; t < T; t++) {
            if (t < nt) {
                const float *xt = x + (size_t)t * K + base;
                float a = 0.0f;
#pragma unroll
                for (int r = 0; r < NRUN; r++) {
#pragma unroll
                    for (int i = 0; i < RL; i += 4) {
                        float4 xv = __ldg((const float4 *)(xt + 32 * r + i));
                        a = fmaf(wv[r * RL + i], xv.x, a);
                        a = fmaf(wv[r * RL + i + 1], xv.y, a);
                        a = fmaf(wv[r * RL + i + 2], xv.z, a);
                        a = fmaf(wv[r * RL + i + 3], xv.w, a);
                    }
                }
                acc[t] += a;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        float v = kn_warp_sum(acc[t]);
        if (lane == 0 && t < nt) y[(size_t)t * N + row] = v;
    }
}

// The same for float-type rows of any length: lane l takes values l, l + 32, ...
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_elem_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, int64_t N, int64_t K, size_t row_bytes,
                     const float *__restrict__ x, int nt) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const uint8_t *wr = w + row * row_bytes;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    for (int64_t k = lane; k < K; k += 32) {
        float wk = kn_elem<TYPE>(wr, k);
#pragma unroll
        for (int t = 0; t < T; t++)
            if (t < nt) acc[t] = fmaf(wk, __ldg(x + (size_t)t * K + k), acc[t]);
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        float v = kn_warp_sum(acc[t]);
        if (lane == 0 && t < nt) y[(size_t)t * N + row] = v;
    }
}

// Float-type rows with K a multiple of 256: lane l takes values [256 c + 8 l, +8) of chunk c, so every weight
// load of the warp is one contiguous 512 B (F16/BF16) or 1 KiB (F32) span; 4 chunks are loaded before use.
template <int TYPE, int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_float_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, int64_t N, int64_t K, size_t row_bytes,
                      const float *__restrict__ x, int nt) {
    constexpr int EB = TYPE == KN_F32 ? 4 : 2; // bytes per weight
    constexpr int U = 4;                       // chunks in flight
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const uint8_t *wr = w + row * row_bytes + (size_t)lane * 8 * EB;
    const int64_t nch = K / 256;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
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
                const uint32_t a[8] = {raw[u][0].x, raw[u][0].y, raw[u][0].z, raw[u][0].w,
                                       raw[u][1].x, raw[u][1].y, raw[u][1].z, raw[u][1].w};
#pragma unroll
                for (int i = 0; i < 8; i++) wv[i] = __uint_as_float(a[i]);
            } else {
                const uint32_t a[4] = {raw[u][0].x, raw[u][0].y, raw[u][0].z, raw[u][0].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const uint16_t lo = (uint16_t)(a[i] & 0xffffu), hi = (uint16_t)(a[i] >> 16);
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
                    float a = acc[t];
                    a = fmaf(wv[0], xa.x, a);
                    a = fmaf(wv[1], xa.y, a);
                    a = fmaf(wv[2], xa.z, a);
                    a = fmaf(wv[3], xa.w, a);
                    a = fmaf(wv[4], xb.x, a);
                    a = fmaf(wv[5], xb.y, a);
                    a = fmaf(wv[6], xb.z, a);
                    a = fmaf(wv[7], xb.w, a);
                    acc[t] = a;
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        float v = kn_warp_sum(acc[t]);
        if (lane == 0 && t < nt) y[(size_t)t * N + row] = v;
    }
}

template <int TYPE, int T> static int gemv_launch(cudaStream_t st, float *y, const void *w, int64_t N, int64_t K,
                                                 const float *x, int nt, int legacy) {
    dim3 grid((unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS));
    size_t rb = kn_cuda_row_bytes(TYPE, K);
    if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        if (K % 256 == 0 && !legacy) {
            gemv_float_kernel<TYPE, T><<<grid, GEMV_WARPS * 32, 0, st>>>(y, (const uint8_t *)w, N, K, rb, x, nt);
            return kn_cuda_launch_status();
        }
    }
    if (K % 32 == 0)
        gemv_kernel<TYPE, T><<<grid, GEMV_WARPS * 32, 0, st>>>(y, (const uint8_t *)w, N, K, rb, x, nt);
    else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16)
        gemv_elem_kernel<TYPE, T><<<grid, GEMV_WARPS * 32, 0, st>>>(y, (const uint8_t *)w, N, K, rb, x, nt);
    else
        return (int)cudaErrorInvalidValue;
    return kn_cuda_launch_status();
}

template <int TYPE> static int gemv_type(cudaStream_t st, float *y, const void *w, int64_t N, int64_t K,
                                        const float *x, int nt, int legacy) {
    if (nt == 1) return gemv_launch<TYPE, 1>(st, y, w, N, K, x, nt, legacy);
    if (nt == 2) return gemv_launch<TYPE, 2>(st, y, w, N, K, x, nt, legacy);
    if (nt <= 4) return gemv_launch<TYPE, 4>(st, y, w, N, K, x, nt, legacy);
    return gemv_launch<TYPE, 8>(st, y, w, N, K, x, nt, legacy);
}

extern "C" int kn_cuda_gemv(void *stream, float *y, const void *w, int type, int64_t N, int64_t K, const float *x,
                            int n_tok, int legacy) {
    if (n_tok <= 0 || N <= 0) return 0;
    if (n_tok > KN_CUDA_GEMV_MAX_TOK) return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
#define GEMV_CALL(TY) return gemv_type<TY>(st, y, w, N, K, x, n_tok, legacy)
    KN_TYPE_DISPATCH(type, GEMV_CALL)
#undef GEMV_CALL
    return 0;
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
        dequant_kernel<TYPE, OUT><<<(unsigned)((n + 255) / 256), 256, 0, st>>>(out, (const uint8_t *)w, n_rows, K, rb);
    } else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        int64_t n = n_rows * K;
        dequant_elem_kernel<TYPE, OUT><<<(unsigned)((n + 255) / 256), 256, 0, st>>>(out, (const uint8_t *)w, n_rows, K,
                                                                                     rb);
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
    to_half_kernel<<<(unsigned)((n + 255) / 256), 256, 0, (cudaStream_t)stream>>>((__half *)out, x, n);
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
        get_rows_kernel<TYPE><<<grid, 128, 0, st>>>(y, (const uint8_t *)w, K, rb, ids);
    } else if constexpr (TYPE == KN_F32 || TYPE == KN_F16 || TYPE == KN_BF16) {
        dim3 grid((unsigned)((K + 127) / 128), (unsigned)n);
        get_rows_elem_kernel<TYPE><<<grid, 128, 0, st>>>(y, (const uint8_t *)w, K, rb, ids);
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
