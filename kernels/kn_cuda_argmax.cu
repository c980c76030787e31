// kernels/kn_cuda_argmax.cu — index of the first maximum of a vector (greedy decoding), one thread block.
#include "kernels/kn_cuda_common.cuh"

#define ARGMAX_THREADS 1024

// a beats b when it is larger, or equal with a lower index; NaN never wins (as the CPU's strict '>').
__device__ __forceinline__ void better(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi) || (bi < 0 && !(v != v))) {
        bv = v;
        bi = i;
    }
}

// *out = argmax of x(n); index 0 when every value is NaN, -1 when n == 0 (the CPU's answers).
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(int32_t *out, const float *__restrict__ x, int n) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = -INFINITY;
    int bi = -1;
    for (int i = threadIdx.x; i < n; i += ARGMAX_THREADS) better(bv, bi, x[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(KN_FULL_MASK, bv, o);
        int j = __shfl_xor_sync(KN_FULL_MASK, bi, o);
        if (j >= 0) better(bv, bi, v, j);
    }
    if ((threadIdx.x & 31) == 0) {
        sv[threadIdx.x >> 5] = bv;
        si[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        bv = sv[threadIdx.x];
        bi = si[threadIdx.x];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float v = __shfl_xor_sync(KN_FULL_MASK, bv, o);
            int j = __shfl_xor_sync(KN_FULL_MASK, bi, o);
            if (j >= 0) better(bv, bi, v, j);
        }
        if (threadIdx.x == 0) *out = n <= 0 ? -1 : (bi < 0 ? 0 : bi);
    }
}

extern "C" int kn_cuda_argmax(void *stream, int32_t *out, const float *x, int n) {
    KN_LAUNCH((argmax_kernel), 1, ARGMAX_THREADS, 0, (cudaStream_t)stream, out, x, n);
    return kn_cuda_launch_status();
}
