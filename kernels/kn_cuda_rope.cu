// kernels/kn_cuda_rope.cu — rotary position embedding (NORM: adjacent pairs, NEOX: halves); the angles are
// computed in double and the rotation without fused multiply-adds, as the CPU backend does.
#include "kernels/kn_cuda_common.cuh"

// x(n_tok, n_head, head_dim) and x2(n_tok, n_head2, head_dim) (n_head2 may be 0); one thread per (token, pair),
// looping over the heads of both.
__global__ void rope_kernel(float *x, int n_head, float *x2, int n_head2, const int32_t *__restrict__ pos, int n_tok,
                            int head_dim, int n_rot, float freq_base, float freq_scale, int neox) {
    const int half = n_rot / 2;
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (int64_t)n_tok * half) return;
    const int t = (int)(g / half), i = (int)(g % half);
    const double p = (double)pos[t] * (double)freq_scale;
    const double inv = pow((double)freq_base, -2.0 * i / (double)n_rot);
    const double th = p * inv;
    const float c = (float)cos(th), s = (float)sin(th);
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    for (int h = 0; h < n_head + n_head2; h++) {
        float *v = h < n_head ? x + ((int64_t)t * n_head + h) * head_dim
                              : x2 + ((int64_t)t * n_head2 + (h - n_head)) * head_dim;
        const float x0 = v[a], x1 = v[b];
        v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[b] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

extern "C" int kn_cuda_rope2(void *stream, float *x1, int n_head1, float *x2, int n_head2, const int32_t *pos,
                             int n_tok, int head_dim, int n_rot, float freq_base, float freq_scale, int mode) {
    if (n_tok <= 0 || n_rot < 2) return 0;
    int64_t n = (int64_t)n_tok * (n_rot / 2);
    KN_LAUNCH((rope_kernel), (unsigned)((n + 127) / 128), 128, 0, (cudaStream_t)stream,
        x1, n_head1, x2, n_head2, pos, n_tok, head_dim, n_rot, freq_base, freq_scale, mode == KN_ROPE_NEOX);
    return kn_cuda_launch_status();
}

extern "C" int kn_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim,
                            int n_rot, float freq_base, float freq_scale, int mode) {
    return kn_cuda_rope2(stream, x, n_head, NULL, 0, pos, n_tok, head_dim, n_rot, freq_base, freq_scale, mode);
}
