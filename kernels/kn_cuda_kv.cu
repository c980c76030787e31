// kernels/kn_cuda_kv.cu — KV cache writes on the GPU: kv_store (fp32 -> fp16 slots) and the ordered command
// chains (slot moves, KIVI value/key quantisation with write-back, value copies, small memsets and uploads).
// The KIVI arithmetic comes from kvcache/kv_quant_math.h, so codes, scales and write-backs equal the CPU's bit
// for bit.
#include "kernels/kn_cuda_common.cuh"
#include "kvcache/kv_quant_math.h"

#define CMD_THREADS 128

// k, v: (n_tok, n_head_kv, D) -> slots dst(n_tok * n_head_kv); pos(n_tok). One block per (token, head).
__global__ void kv_store_kernel(const struct kv_slot *__restrict__ dst, const float *__restrict__ k,
                                const float *__restrict__ v, const int32_t *__restrict__ pos, int n_head_kv, int D) {
    const int64_t row = blockIdx.x; // tok * n_head_kv + h
    const struct kv_slot s = dst[row];
    const float *kr = k + row * D, *vr = v + row * D;
    kn_half *kd = kvq_fp_k(s.block, D, s.slot), *vd = kvq_fp_v(s.block, D, s.slot);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        kd[d] = __half_as_ushort(__float2half_rn(kr[d]));
        vd[d] = __half_as_ushort(__float2half_rn(vr[d]));
    }
    if (threadIdx.x == 0) kvq_fp_pos(s.block)[s.slot] = pos[row / n_head_kv];
}

extern "C" int kn_cuda_kv_store(void *stream, const struct kv_slot *dst, const float *k, const float *v,
                                const int32_t *pos, int n_tok, int n_head_kv, int D) {
    if (n_tok <= 0 || n_head_kv <= 0) return 0;
    int threads = D >= 128 ? 128 : (D >= 64 ? 64 : 32);
    KN_LAUNCH((kv_store_kernel), (unsigned)(n_tok * n_head_kv), threads, 0, (cudaStream_t)stream, dst, k, v, pos,
              n_head_kv, D);
    return kn_cuda_launch_status();
}

// ---- command chains --------------------------------------------------------------------------------------

struct cmd_smem {
    float s[KN_CUDA_MAX_HEAD_DIM], z[KN_CUDA_MAX_HEAD_DIM];  // per channel (keys) or per value group (values)
    uint8_t code[KN_CUDA_MAX_HEAD_DIM * KV_MAX_GROUP];       // codes of the job, in stream order
};

// Writes codes code[0..n) (stream indices first .. first + n) into the packed stream w, one thread per word;
// bits outside the range keep their value.
__device__ void pack_codes(uint32_t *w, size_t first, int n, int B, const uint8_t *code) {
    const size_t per = 32 / B;
    const size_t w0 = first / per, w1 = (first + n - 1) / per;
    for (size_t wi = w0 + threadIdx.x; wi <= w1; wi += blockDim.x) {
        uint32_t word = w[wi];
        for (size_t j = 0; j < per; j++) {
            size_t idx = wi * per + j;
            if (idx < first || idx >= first + (size_t)n) continue;
            uint32_t sh = (uint32_t)(j * B), mask = ((1u << B) - 1u) << sh;
            word = (word & ~mask) | (((uint32_t)code[idx - first] << sh) & mask);
        }
        w[wi] = word;
    }
}

// KV_QJOB_VALUE: the value of fp slot src into group slot t (per token, groups of VG channels), written back.
__device__ void job_value(const struct kn_cuda_cmd *c, const struct kv_slot src, cmd_smem *sm) {
    const struct kv_qfmt f = kv_qfmt_make(c->D, c->G, c->B);
    const int D = f.D, VG = f.VG, nvg = D / VG, t = c->t;
    void *g = c->dst;
    kn_half *vrow = kvq_fp_v(src.block, D, src.slot);
    for (int q = threadIdx.x; q < nvg; q += blockDim.x) {
        float mn = kn_half_to_float(vrow[q * VG]), mx = mn;
        for (int d = 1; d < VG; d++) {
            float x = kn_half_to_float(vrow[q * VG + d]);
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
        }
        struct kvq_param p = kvq_param_make(mn, mx, f.B);
        kvq_vscale(g, f)[t * nvg + q] = p.hs;
        kvq_vzero(g, f)[t * nvg + q] = p.hz;
        sm->s[q] = p.s;
        sm->z[q] = p.z;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        sm->code[d] = (uint8_t)kvq_encode(kn_half_to_float(vrow[d]), sm->s[d / VG], sm->z[d / VG], f.B);
    __syncthreads();
    pack_codes(kvq_vcode(g, f), (size_t)t * D, D, f.B, sm->code);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        vrow[d] = kn_float_to_half(kvq_decode(sm->code[d], sm->s[d / VG], sm->z[d / VG]));
    if (threadIdx.x == 0) kvq_set_pos(g, f, t, kvq_fp_pos(src.block)[src.slot]);
}

// KV_QJOB_KEYS: keys of the n fp slots src[] per channel into group slots 0..n-1, written back.
__device__ void job_keys(const struct kn_cuda_cmd *c, const struct kv_slot *src, cmd_smem *sm) {
    const struct kv_qfmt f = kv_qfmt_make(c->D, c->G, c->B);
    const int D = f.D, G = f.G, n = c->n_src;
    void *g = c->dst;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float mn = 0.0f, mx = 0.0f;
        for (int t = 0; t < n; t++) {
            float x = kn_half_to_float(kvq_fp_k(src[t].block, D, src[t].slot)[d]);
            if (t == 0 || x < mn) mn = x;
            if (t == 0 || x > mx) mx = x;
        }
        struct kvq_param p = kvq_param_make(mn, mx, f.B);
        kvq_kscale(g, f)[d] = p.hs;
        kvq_kzero(g, f)[d] = p.hz;
        sm->s[d] = p.s;
        sm->z[d] = p.z;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < D * G; i += blockDim.x) {
        int d = i / G, t = i % G;
        uint32_t code = 0;
        if (t < n) code = kvq_encode(kn_half_to_float(kvq_fp_k(src[t].block, D, src[t].slot)[d]), sm->s[d], sm->z[d], f.B);
        sm->code[i] = (uint8_t)code;
    }
    __syncthreads();
    pack_codes(kvq_kcode(g, f), 0, D * G, f.B, sm->code);
    for (int i = threadIdx.x; i < D * n; i += blockDim.x) {
        int d = i / n, t = i % n;
        kvq_fp_k(src[t].block, D, src[t].slot)[d] = kn_float_to_half(kvq_decode(sm->code[d * G + t], sm->s[d], sm->z[d]));
    }
    if (threadIdx.x == 0) {
        for (int t = 0; t < n; t++) kvq_set_pos(g, f, t, kvq_fp_pos(src[t].block)[src[t].slot]);
        for (int t = n; t < G; t++) *kvq_live(g) &= ~(1u << t);
    }
}

// KV_QJOB_COPY_V: token t_src of group src (codes, scales, zeros, position) into slot t of group dst.
__device__ void job_copy_v(const struct kn_cuda_cmd *c, cmd_smem *sm) {
    const struct kv_qfmt f = kv_qfmt_make(c->D, c->G, c->B);
    const int D = f.D, nvg = D / f.VG, t = c->t, ts = c->t_src;
    void *sg = (void *)c->src;
    void *g = c->dst;
    for (int d = threadIdx.x; d < D; d += blockDim.x) sm->code[d] = (uint8_t)kv_code_get(kvq_vcode(sg, f), (size_t)ts * D + d, f.B);
    __shared__ int32_t pos;
    if (threadIdx.x == 0) pos = *kvq_pos_base(sg) + kvq_pos_off(sg, f)[ts];
    __syncthreads();
    pack_codes(kvq_vcode(g, f), (size_t)t * D, D, f.B, sm->code);
    for (int q = threadIdx.x; q < nvg; q += blockDim.x) {
        kvq_vscale(g, f)[t * nvg + q] = kvq_vscale(sg, f)[ts * nvg + q];
        kvq_vzero(g, f)[t * nvg + q] = kvq_vzero(sg, f)[ts * nvg + q];
    }
    __syncthreads();
    if (threadIdx.x == 0) kvq_set_pos(g, f, t, pos);
}

// Slot copy src -> dst: position, key and value rows (distinct slots never overlap).
__device__ void cmd_move(const struct kv_slot s, const struct kv_slot d, int D) {
    if (s.block == d.block && s.slot == d.slot) return;
    const kn_half *ks = kvq_fp_k(s.block, D, s.slot), *vs = kvq_fp_v(s.block, D, s.slot);
    kn_half *kd = kvq_fp_k(d.block, D, d.slot), *vd = kvq_fp_v(d.block, D, d.slot);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        kd[i] = ks[i];
        vd[i] = vs[i];
    }
    if (threadIdx.x == 0) kvq_fp_pos(d.block)[d.slot] = kvq_fp_pos(s.block)[s.slot];
}

__device__ void cmd_memset(void *dst, uint32_t n) {
    unsigned char *p = (unsigned char *)dst;
    if (((uintptr_t)p & 3) == 0) {
        uint32_t nw = n / 4;
        for (uint32_t i = threadIdx.x; i < nw; i += blockDim.x) ((uint32_t *)p)[i] = 0;
        for (uint32_t i = nw * 4 + threadIdx.x; i < n; i += blockDim.x) p[i] = 0;
    } else {
        for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = 0;
    }
}

// One block per chain: its commands in order, a barrier after each.
__global__ void __launch_bounds__(CMD_THREADS)
    cmd_kernel(const struct kn_cuda_cmd *__restrict__ cmds, const int32_t *__restrict__ order,
               const int32_t *__restrict__ chain_start, const struct kv_slot *__restrict__ slots) {
    __shared__ cmd_smem sm;
    const int c0 = chain_start[blockIdx.x], c1 = chain_start[blockIdx.x + 1];
    for (int i = c0; i < c1; i++) {
        const struct kn_cuda_cmd *c = &cmds[order[i]];
        switch (c->kind) {
        case KN_CMD_MEMSET: cmd_memset(c->dst, c->nbytes); break;
        case KN_CMD_UPLOAD:
            if (threadIdx.x < c->nbytes) ((unsigned char *)c->dst)[threadIdx.x] = c->data[threadIdx.x];
            break;
        case KN_CMD_MOVE: cmd_move(slots[c->slot0], slots[c->slot0 + 1], c->D); break;
        case KN_CMD_QVALUE: job_value(c, slots[c->slot0], &sm); break;
        case KN_CMD_QKEYS: job_keys(c, slots + c->slot0, &sm); break;
        case KN_CMD_QCOPYV: job_copy_v(c, &sm); break;
        default: break;
        }
        __syncthreads();
    }
}

extern "C" int kn_cuda_cmd_run(void *stream, const struct kn_cuda_cmd *cmds, const int32_t *order,
                               const int32_t *chain_start, int n_chains, const struct kv_slot *slots) {
    if (n_chains <= 0) return 0;
    KN_LAUNCH((cmd_kernel), (unsigned)n_chains, CMD_THREADS, 0, (cudaStream_t)stream, cmds, order, chain_start, slots);
    return kn_cuda_launch_status();
}
