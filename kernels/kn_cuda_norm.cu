// kernels/kn_cuda_norm.cu — RMSNorm: a warp per row for many short rows, a block per row for few long ones; the
// same kernels can first add a residual into x (add then rmsnorm in one launch, bit for bit the two ops).
#include "kernels/kn_cuda_common.cuh"

// y(n_rows, dim) = x / sqrt(mean(x^2) + eps) * w(dim), one warp per row; y may equal x. With res != NULL,
// x += res first (each thread reads and writes the same elements in both passes, so y may equal res).
__global__ void rmsnorm_warp_kernel(float *y, float *x, const float *res, const float *__restrict__ w, int n_rows,
                                    int dim, float eps) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= n_rows) return;
    float *xr = x + r * dim;
    float *yr = y + r * dim;
    float ss = 0.0f;
    if (res) {
        const float *rr = res + r * dim;
        for (int i = lane; i < dim; i += 32) {
            const float v = xr[i] + rr[i];
            xr[i] = v;
            ss = fmaf(v, v, ss);
        }
    } else {
        for (int i = lane; i < dim; i += 32) ss = fmaf(xr[i], xr[i], ss);
    }
    ss = kn_warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = lane; i < dim; i += 32) yr[i] = xr[i] * inv * w[i];
}

// The same with one block of blockDim.x threads per row.
__global__ void rmsnorm_block_kernel(float *y, float *x, const float *res, const float *__restrict__ w, int dim,
                                     float eps) {
    __shared__ float part[32];
    const int64_t r = blockIdx.x;
    float *xr = x + r * dim;
    float *yr = y + r * dim;
    float ss = 0.0f;
    if (res) {
        const float *rr = res + r * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = xr[i] + rr[i];
            xr[i] = v;
            ss = fmaf(v, v, ss);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    }
    ss = kn_warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
        v = kn_warp_sum(v);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    const float inv = 1.0f / sqrtf(part[0] / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

static int rmsnorm_launch(cudaStream_t st, float *y, float *x, const float *res, const float *w, int n_rows, int dim,
                          float eps) {
    if (n_rows <= 0 || dim <= 0) return 0;
    if (n_rows < 128 && dim >= 512)
        KN_LAUNCH((rmsnorm_block_kernel), n_rows, 256, 0, st, y, x, res, w, dim, eps);
    else
        KN_LAUNCH((rmsnorm_warp_kernel), (n_rows + 7) / 8, 256, 0, st, y, x, res, w, n_rows, dim, eps);
    return kn_cuda_launch_status();
}

extern "C" int kn_cuda_rmsnorm(void *stream, float *y, const float *x, const float *w, int n_rows, int dim,
                               float eps) {
    // x is only written when a residual is given
    return rmsnorm_launch((cudaStream_t)stream, y, (float *)x, NULL, w, n_rows, dim, eps);
}

extern "C" int kn_cuda_add_rmsnorm(void *stream, float *y, float *x, const float *r, const float *w, int n_rows,
                                   int dim, float eps) {
    return rmsnorm_launch((cudaStream_t)stream, y, x, r, w, n_rows, dim, eps);
}
