// kernels/kn_cuda_rope.cu — rotary position embedding (NORM: adjacent pairs, NEOX: halves); the angles are
// computed in double and the rotation without fused multiply-adds, as the CPU backend does.
#include "kernels/kn_cuda_common.cuh"

// x(n_tok, n_head, head_dim); one thread per (token, pair), looping over the heads.
__global__ void rope_kernel(float *x, const int32_t *__restrict__ pos, int n_tok, int n_head, int head_dim, int n_rot,
                            float freq_base, float freq_scale, int neox) {
    const int half = n_rot / 2;
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (int64_t)n_tok * half) return;
    const int t = (int)(g / half), i = (int)(g % half);
    const double p = (double)pos[t] * (double)freq_scale;
    const double inv = pow((double)freq_base, -2.0 * i / (double)n_rot);
    const double th = p * inv;
    const float c = (float)cos(th), s = (float)sin(th);
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    for (int h = 0; h < n_head; h++) {
        float *v = x + ((int64_t)t * n_head + h) * head_dim;
        const float x0 = v[a], x1 = v[b];
        v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

extern "C" int kn_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim,
                            int n_rot, float freq_base, float freq_scale, int mode) {
    if (n_tok <= 0 || n_rot < 2) return 0;
    int64_t n = (int64_t)n_tok * (n_rot / 2);
    rope_kernel<<<(unsigned)((n + 127) / 128), 128, 0, (cudaStream_t)stream>>>(
        x, pos, n_tok, n_head, head_dim, n_rot, freq_base, freq_scale, mode == KN_ROPE_NEOX);
    return kn_cuda_launch_status();
}
