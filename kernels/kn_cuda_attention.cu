// kernels/kn_cuda_attention.cu — attention of a batch of queries over one layer's KV cache: fp16 blocks and
// KIVI-packed groups (dequantisation fused into the dot products), positions, live masks, sliding windows,
// optional probabilities.
//
// Work unit: one warp = (KV head, R query rows of that head's group, split of the head's chunks), where a
// chunk is one fp block or one packed group (<= 32 slots). Keys: lane = slot, R dot products per lane with
// the queries in shared memory. Online softmax per chunk. Values: lanes split the head dimension (8 dims per
// lane, D/8 lanes per slot, 32/(D/8) slots at a time). A split writes (o, max, sum) partials that a second
// kernel merges (and uses to normalise the probabilities); with a single split and no probabilities the warp
// writes the output itself.
#include <limits.h>

#include "kernels/kn_cuda_common.cuh"
#include "kvcache/kv_quant_math.h"

#define ATT_WARPS 4

__device__ __forceinline__ bool att_visible(int32_t pos, int32_t qp, int window) {
    return pos <= qp && (window <= 0 || (int64_t)pos > (int64_t)qp - window);
}

template <int R, bool VEC>
__global__ void __launch_bounds__(ATT_WARPS * 32) attn_kernel(const struct kn_cuda_attn_params p) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int D = p.D;
    float *qs = smem + warp * (R * D + 32 * R); // (R, D) query rows
    float *ps = qs + R * D;                     // (32, R) probabilities of the current chunk
    const int grp = p.n_head / p.n_head_kv;
    const int nrows = p.n_tok * grp;
    const int n_rb = (nrows + R - 1) / R;
    const int64_t wid = (int64_t)blockIdx.x * ATT_WARPS + warp;
    const int sp = (int)(wid % p.n_split);
    const int64_t rest = wid / p.n_split;
    const int rb = (int)(rest % n_rb);
    const int h = (int)(rest / n_rb);
    if (h >= p.n_head_kv) return;

    int32_t qp[R];
    int orow[R]; // output row tok * n_head + hq, or -1
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int row = rb * R + r;
        if (row < nrows) {
            const int tk = row / grp, hq = h * grp + row % grp;
            qp[r] = p.q_pos[tk];
            orow[r] = tk * p.n_head + hq;
        } else {
            qp[r] = INT_MIN;
            orow[r] = -1;
        }
    }
    for (int i = lane; i < R * D; i += 32) {
        const int r = i / D, row = rb * R + r;
        qs[i] = row < nrows ? p.q[((int64_t)(row / grp) * p.n_head + h * grp + row % grp) * D + i % D] : 0.0f;
    }
    __syncwarp();

    const struct kn_cuda_attn_head hd = p.heads[h];
    const int G = p.group;
    const struct kv_qfmt f = kv_qfmt_make(D, G > 0 ? G : 1, p.bits > 0 ? p.bits : 2);
    const int n_chunks = hd.n_q + (hd.n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
    const int c0 = sp * p.chunks_per_split;
    const int c1 = min(c0 + p.chunks_per_split, n_chunks);
    const int lps = VEC ? D / 8 : 32;   // lanes per slot in the value phase
    const int spi = 32 / lps;           // slots per iteration in the value phase
    const int d0 = VEC ? (lane % lps) * 8 : lane;

    float m[R], lsum[R], o[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        lsum[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) o[r][i] = 0.0f;
    }

    for (int c = c0; c < c1; c++) {
        const bool packed = c < hd.n_q;
        void *blk = packed ? p.ptrs[hd.q_off + c] : p.ptrs[hd.fp_off + (c - hd.n_q)];
        int nslot, slot_base;
        bool alive;
        int32_t pos = 0;
        if (packed) {
            nslot = G;
            slot_base = c * G;
            const uint32_t live = *kvq_live(blk);
            alive = lane < G && ((live >> lane) & 1u);
            if (alive) pos = *kvq_pos_base(blk) + kvq_pos_off(blk, f)[lane];
        } else {
            const int b = c - hd.n_q;
            nslot = min(KV_FP_BLOCK, hd.n_fp - KV_FP_BLOCK * b);
            slot_base = hd.n_q * G + KV_FP_BLOCK * b;
            alive = lane < nslot;
            if (alive) pos = kvq_fp_pos(blk)[lane];
        }
        bool vis[R];
        bool any = false;
#pragma unroll
        for (int r = 0; r < R; r++) {
            vis[r] = alive && att_visible(pos, qp[r], p.window);
            any |= vis[r];
        }
        if (!__any_sync(KN_FULL_MASK, any)) {
            if (p.probs && lane < nslot) {
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (orow[r] >= 0) {
                        const int tk = orow[r] / p.n_head, hq = orow[r] % p.n_head;
                        p.probs[((int64_t)hq * p.n_tok + tk) * p.probs_stride + slot_base + lane] = -INFINITY;
                    }
            }
            continue;
        }

        // ---- logits: lane = slot
        float l[R];
#pragma unroll
        for (int r = 0; r < R; r++) l[r] = 0.0f;
        if (packed) {
            if (lane < G) {
                const uint32_t *kc = kvq_kcode(blk, f);
                const kn_half *ks = kvq_kscale(blk, f), *kz = kvq_kzero(blk, f);
                const int B = f.B;
                const uint32_t per = 32u / (uint32_t)B, mask = (1u << B) - 1u;
                for (int d = 0; d < D; d++) {
                    const uint32_t idx = (uint32_t)(d * G + lane);
                    const uint32_t code = (kc[idx / per] >> ((idx % per) * B)) & mask;
                    const float kd = fmaf((float)code, kn_h2f(ks[d]), kn_h2f(kz[d]));
#pragma unroll
                    for (int r = 0; r < R; r++) l[r] = fmaf(qs[r * D + d], kd, l[r]);
                }
            }
        } else if (VEC) {
            const uint4 *kr = (const uint4 *)kvq_fp_k(blk, D, lane);
#pragma unroll 4
            for (int d8 = 0; d8 < D / 8; d8++) {
                const uint4 kv = __ldg(kr + d8);
                const uint32_t wv[4] = {kv.x, kv.y, kv.z, kv.w};
                float kf[8];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float2 t2 = __half22float2(*(const __half2 *)&wv[i]);
                    kf[2 * i] = t2.x;
                    kf[2 * i + 1] = t2.y;
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const float4 qa = *(const float4 *)(qs + r * D + 8 * d8);
                    const float4 qb = *(const float4 *)(qs + r * D + 8 * d8 + 4);
                    float a = l[r];
                    a = fmaf(qa.x, kf[0], a);
                    a = fmaf(qa.y, kf[1], a);
                    a = fmaf(qa.z, kf[2], a);
                    a = fmaf(qa.w, kf[3], a);
                    a = fmaf(qb.x, kf[4], a);
                    a = fmaf(qb.y, kf[5], a);
                    a = fmaf(qb.z, kf[6], a);
                    a = fmaf(qb.w, kf[7], a);
                    l[r] = a;
                }
            }
        } else {
            const kn_half *kr = kvq_fp_k(blk, D, lane);
            for (int d = 0; d < D; d++) {
                const float kd = kn_h2f(kr[d]);
#pragma unroll
                for (int r = 0; r < R; r++) l[r] = fmaf(qs[r * D + d], kd, l[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) l[r] = vis[r] ? p.scale * l[r] : -INFINITY;
        if (p.probs && lane < nslot) {
#pragma unroll
            for (int r = 0; r < R; r++)
                if (orow[r] >= 0) {
                    const int tk = orow[r] / p.n_head, hq = orow[r] % p.n_head;
                    p.probs[((int64_t)hq * p.n_tok + tk) * p.probs_stride + slot_base + lane] = l[r];
                }
        }

        // ---- online softmax
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float cm = kn_warp_max(l[r]);
            const float mn = fmaxf(m[r], cm);
            float alpha = 1.0f, pr = 0.0f;
            if (mn != -INFINITY) {
                alpha = expf(m[r] - mn);
                pr = expf(l[r] - mn);
            }
            m[r] = mn;
            lsum[r] = lsum[r] * alpha + pr;
#pragma unroll
            for (int i = 0; i < 8; i++) o[r][i] *= alpha;
            ps[lane * R + r] = pr;
        }
        __syncwarp();

        // ---- values
        if (packed) {
            const uint32_t *vc = kvq_vcode(blk, f);
            const kn_half *vs = kvq_vscale(blk, f), *vz = kvq_vzero(blk, f);
            const int nvg = D / f.VG, B = f.B;
            for (int t = VEC ? lane / lps : 0; t < nslot; t += spi) {
                float pv[R];
                bool nz = false;
#pragma unroll
                for (int r = 0; r < R; r++) {
                    pv[r] = ps[t * R + r];
                    nz |= pv[r] != 0.0f;
                }
                if (!nz) continue;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int d = VEC ? d0 + i : d0 + 32 * i;
                    if (d < D) {
                        const uint32_t code = kv_code_get(vc, (size_t)t * D + d, B);
                        const int q = t * nvg + d / f.VG;
                        const float vd = fmaf((float)code, kn_h2f(vs[q]), kn_h2f(vz[q]));
#pragma unroll
                        for (int r = 0; r < R; r++) o[r][i] = fmaf(pv[r], vd, o[r][i]);
                    }
                }
            }
        } else {
            for (int t = VEC ? lane / lps : 0; t < nslot; t += spi) {
                float pv[R];
                bool nz = false;
#pragma unroll
                for (int r = 0; r < R; r++) {
                    pv[r] = ps[t * R + r];
                    nz |= pv[r] != 0.0f;
                }
                if (!nz) continue;
                float vv[8];
                if (VEC) {
                    const uint4 v4 = __ldg((const uint4 *)(kvq_fp_v(blk, D, t) + d0));
                    const uint32_t wv[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float2 t2 = __half22float2(*(const __half2 *)&wv[i]);
                        vv[2 * i] = t2.x;
                        vv[2 * i + 1] = t2.y;
                    }
                } else {
                    const kn_half *vr = kvq_fp_v(blk, D, t);
#pragma unroll
                    for (int i = 0; i < 8; i++) vv[i] = d0 + 32 * i < D ? kn_h2f(vr[d0 + 32 * i]) : 0.0f;
                }
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int i = 0; i < 8; i++) o[r][i] = fmaf(pv[r], vv[i], o[r][i]);
            }
        }
        __syncwarp();
    }

    // ---- merge the lane groups of the value phase, then write
    if (VEC) {
        for (int off = lps; off < 32; off <<= 1)
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int i = 0; i < 8; i++) o[r][i] += __shfl_xor_sync(KN_FULL_MASK, o[r][i], off);
    }
    const bool writer = VEC ? lane < lps : true;
    const bool direct = p.n_split == 1 && !p.probs;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float L = kn_warp_sum(lsum[r]);
        if (orow[r] < 0 || !writer) continue;
        if (direct) {
            float *out = p.out + (int64_t)orow[r] * D;
            const float inv = L > 0.0f ? 1.0f / L : 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int d = VEC ? d0 + i : d0 + 32 * i;
                if (d < D) out[d] = o[r][i] * inv;
            }
        } else {
            float *pt = p.part + ((int64_t)orow[r] * p.n_split + sp) * (D + 2);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int d = VEC ? d0 + i : d0 + 32 * i;
                if (d < D) pt[d] = o[r][i];
            }
            if (lane == 0) {
                pt[D] = m[r];
                pt[D + 1] = L;
            }
        }
    }
}

// Merges the split partials of row blockIdx.x (= tok * n_head + hq) and normalises its probabilities.
__global__ void attn_combine_kernel(const struct kn_cuda_attn_params p) {
    const int row = blockIdx.x;
    const int D = p.D, ns = p.n_split;
    const float *pt = p.part + (int64_t)row * ns * (D + 2);
    float M = -INFINITY;
    for (int s = 0; s < ns; s++)
        if (pt[s * (D + 2) + D + 1] > 0.0f) M = fmaxf(M, pt[s * (D + 2) + D]);
    float L = 0.0f;
    for (int s = 0; s < ns; s++) {
        const float ls = pt[s * (D + 2) + D + 1];
        if (ls > 0.0f) L += ls * expf(pt[s * (D + 2) + D] - M);
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < ns; s++) {
            const float ls = pt[s * (D + 2) + D + 1];
            if (ls > 0.0f) acc += pt[s * (D + 2) + d] * expf(pt[s * (D + 2) + D] - M);
        }
        p.out[(int64_t)row * D + d] = acc * inv;
    }
    if (p.probs) {
        const int tk = row / p.n_head, hq = row % p.n_head;
        const int h = hq / (p.n_head / p.n_head_kv);
        const int n_slots = p.heads[h].n_q * p.group + p.heads[h].n_fp;
        float *pr = p.probs + ((int64_t)hq * p.n_tok + tk) * p.probs_stride;
        for (int j = threadIdx.x; j < p.probs_stride; j += blockDim.x) {
            const float v = j < n_slots ? pr[j] : -INFINITY;
            pr[j] = (L > 0.0f && v != -INFINITY) ? expf(v - M) * inv : 0.0f;
        }
    }
}

extern "C" int kn_cuda_attention_rows_per_warp(int n_tok, int group_heads) {
    int rows = n_tok * group_heads;
    return rows >= 8 ? 8 : rows >= 3 ? 4 : rows >= 2 ? 2 : 1;
}

template <int R> static void attn_launch(cudaStream_t st, const struct kn_cuda_attn_params *p, unsigned blocks) {
    const size_t smem = (size_t)ATT_WARPS * (R * p->D + 32 * R) * sizeof(float);
    const bool vec = p->D % 8 == 0 && 32 % (p->D / 8) == 0;
    if (vec)
        attn_kernel<R, true><<<blocks, ATT_WARPS * 32, smem, st>>>(*p);
    else
        attn_kernel<R, false><<<blocks, ATT_WARPS * 32, smem, st>>>(*p);
}

extern "C" int kn_cuda_attention(void *stream, const struct kn_cuda_attn_params *p) {
    if (p->n_tok <= 0) return 0;
    if (p->D <= 0 || p->D > KN_CUDA_MAX_HEAD_DIM || p->n_split < 1 || p->n_head_kv <= 0) return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    const int R = p->rows_per_warp;
    const int grp = p->n_head / p->n_head_kv;
    const int64_t n_rb = ((int64_t)p->n_tok * grp + R - 1) / R;
    const int64_t warps = (int64_t)p->n_head_kv * n_rb * p->n_split;
    const unsigned blocks = (unsigned)((warps + ATT_WARPS - 1) / ATT_WARPS);
    switch (R) {
    case 1: attn_launch<1>(st, p, blocks); break;
    case 2: attn_launch<2>(st, p, blocks); break;
    case 4: attn_launch<4>(st, p, blocks); break;
    case 8: attn_launch<8>(st, p, blocks); break;
    default: return (int)cudaErrorInvalidValue;
    }
    int rc = kn_cuda_launch_status();
    if (rc) return rc;
    if (p->n_split > 1 || p->probs) {
        attn_combine_kernel<<<(unsigned)(p->n_tok * p->n_head), 128, 0, st>>>(*p);
        rc = kn_cuda_launch_status();
    }
    return rc;
}
