// kernels/kn_cuda_elementwise.cu — add, scale and the gated activations (SiLU, GELU-tanh) over fp32 vectors.
#include "kernels/kn_cuda_common.cuh"

// y(n) += x(n)
__global__ void add_kernel(float *y, const float *__restrict__ x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}
// y(n) *= s
__global__ void scale_kernel(float *y, float s, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] *= s;
}
// y(n) = act(gate(n)) * up(n); y may alias gate or up (each element is read before it is written).
__global__ void glu_kernel(float *y, const float *gate, const float *up, size_t n, int gelu) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = gate[i], u = up[i];
    y[i] = kn_glu_act(g, u, gelu);
}

static unsigned blocks_for(size_t n) { return (unsigned)((n + 255) / 256); }

extern "C" int kn_cuda_add(void *stream, float *y, const float *x, size_t n) {
    if (!n) return 0;
    KN_LAUNCH((add_kernel), blocks_for(n), 256, 0, (cudaStream_t)stream, y, x, n);
    return kn_cuda_launch_status();
}
extern "C" int kn_cuda_scale(void *stream, float *y, float s, size_t n) {
    if (!n) return 0;
    KN_LAUNCH((scale_kernel), blocks_for(n), 256, 0, (cudaStream_t)stream, y, s, n);
    return kn_cuda_launch_status();
}
extern "C" int kn_cuda_glu(void *stream, float *y, const float *gate, const float *up, size_t n, int act) {
    if (!n) return 0;
    KN_LAUNCH((glu_kernel), blocks_for(n), 256, 0, (cudaStream_t)stream, y, gate, up, n, act == KN_ACT_GELU_TANH);
    return kn_cuda_launch_status();
}
