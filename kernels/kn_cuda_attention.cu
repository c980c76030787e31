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
    KN_DYN_SMEM(float, smem);
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
        KN_LAUNCH((attn_kernel<R, true>), blocks, ATT_WARPS * 32, smem, st, *p);
    else
        KN_LAUNCH((attn_kernel<R, false>), blocks, ATT_WARPS * 32, smem, st, *p);
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
        KN_LAUNCH((attn_combine_kernel), (unsigned)(p->n_tok * p->n_head), 128, 0, st, *p);
        rc = kn_cuda_launch_status();
    }
    return rc;
}

// ==== decode kernel (kn_cuda_attention_decode) =============================================================
//
// Block = KN_CUDA_DEC_WARPS warps for (split blockIdx.x, row block blockIdx.y, KV head blockIdx.z); the R query
// rows of the row block sit in shared memory and share every K/V load. Warp w of split s takes the chunks
// s * W * cpw + w + W * k (k < cpw). Per chunk:
//   fp block: the 32 slot positions, the key rows (lane = slot, D/8 16-byte loads) and the first value loads
//     (lane = 16-byte segment seg = lane % NV of slot sub + SPI * i, sub = lane / NV: 512 contiguous bytes per
//     warp load) are all issued before any is used.
//   packed group: the whole group (header, codes, scales) is copied into the warp's shared memory with 16-byte
//     loads in flight together; keys use q·k_t = sum_d (q_d s_d) code(d,t) + sum_d q_d z_d (q_d s_d and the
//     zero term once per group), values o += (p_t s_t) code(t,d) + p_t z_t with codes decoded a word at a time.
// Online softmax per chunk; slots no query row sees contribute exact zeros (their values are masked, so stale
// bytes in dead slots can never turn into NaN). Warps merge through shared memory into one (o, max, sum)
// partial per split and row; the last block of a (head, row block) merges the splits when fuse_combine is set,
// attn_dec_combine_kernel does it otherwise (and normalises the probabilities).

#define DEC_W KN_CUDA_DEC_WARPS
#define DEC_FS KN_CUDA_DEC_FUSE_SPLITS

__host__ __device__ static inline int dec_r4(int n) { return (n + 3) & ~3; }

// Shared memory plan of the decode kernel, in floats (every region 16-byte aligned).
struct dec_smem {
    int warp0;  // after the (R, D) query rows at 0: the per-warp areas
    int ws;     // floats per warp area
    int qss;    // in a warp area, after the staged packed group at 0: q * key scale (D, R), packed only
    int ps;     // in a warp area: probabilities of the current chunk (32, R)
    int merge;  // (W, R, D + 2) warp partials, over the warp areas once the chunks are done
    int tail;   // weights (R, W), M (R), L (R), split max / sum (R, DEC_FS) x 2, a flag
    int total;
};

__host__ __device__ static inline struct dec_smem dec_smem_make(int R, int D, int qwords) {
    struct dec_smem s;
    s.warp0 = dec_r4(R * D);
    s.qss = dec_r4(qwords);
    s.ps = s.qss + (qwords > 0 ? dec_r4(D * R) : 0);
    s.ws = s.ps + dec_r4(32 * R);
    s.merge = s.warp0;
    const int areas = DEC_W * s.ws, merge = DEC_W * R * (D + 2);
    s.tail = s.warp0 + dec_r4(areas > merge ? areas : merge);
    s.total = s.tail + dec_r4(R * DEC_W) + dec_r4(2 * R) + dec_r4(2 * R * DEC_FS) + 4;
    return s;
}

__device__ __forceinline__ void dec_h8(uint4 u, float *f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 t = __half22float2(*(const __half2 *)&w[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

// Exact float of a code below 2^23.
__device__ __forceinline__ float dec_code_f(uint32_t c) { return __uint_as_float(c | 0x4B000000u) - 8388608.0f; }

// R consecutive floats of shared memory (16-byte aligned when R >= 4, 8-byte when R == 2).
template <int R> __device__ __forceinline__ void dec_ld(const float *p, float (&v)[R]) {
    if constexpr (R % 4 == 0) {
#pragma unroll
        for (int i = 0; i < R / 4; i++) {
            const float4 t = ((const float4 *)p)[i];
            v[4 * i] = t.x;
            v[4 * i + 1] = t.y;
            v[4 * i + 2] = t.z;
            v[4 * i + 3] = t.w;
        }
    } else if constexpr (R == 2) {
        const float2 t = *(const float2 *)p;
        v[0] = t.x;
        v[1] = t.y;
    } else {
#pragma unroll
        for (int i = 0; i < R; i++) v[i] = p[i];
    }
}
template <int R> __device__ __forceinline__ void dec_st(float *p, const float (&v)[R]) {
    if constexpr (R % 4 == 0) {
#pragma unroll
        for (int i = 0; i < R / 4; i++) ((float4 *)p)[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
    } else if constexpr (R == 2) {
        *(float2 *)p = make_float2(v[0], v[1]);
    } else {
#pragma unroll
        for (int i = 0; i < R; i++) p[i] = v[i];
    }
}

// Logits of this lane's slot (already -inf where invisible) into the probabilities rows.
template <int R>
__device__ __forceinline__ void dec_probs(const struct kn_cuda_attn_params &p, const float (&l)[R], int rb, int grp,
                                          int nrows, int h, int slot_base, int lane, int nslot) {
    if (lane >= nslot) return;
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int row = rb * R + r;
        if (row < nrows) {
            const int tk = row / grp, hq = h * grp + row % grp;
            p.probs[((int64_t)hq * p.n_tok + tk) * p.probs_stride + slot_base + lane] = l[r];
        }
    }
}

// Online softmax step over one chunk (lane = slot): rescales the running state, leaves p in ps[lane * R + r].
template <int R>
__device__ __forceinline__ void dec_softmax(const float (&l)[R], float (&m)[R], float (&ls)[R], float (&oz)[R],
                                            float (&o)[R][8], float *ps, int lane) {
    float pr[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float cm = kn_warp_max(l[r]);
        const float mn = fmaxf(m[r], cm);
        float alpha = 1.0f;
        pr[r] = 0.0f;
        if (mn != -INFINITY) {
            alpha = expf(m[r] - mn);
            pr[r] = expf(l[r] - mn);
        }
        m[r] = mn;
        ls[r] = ls[r] * alpha + pr[r];
        oz[r] *= alpha;
#pragma unroll
        for (int j = 0; j < 8; j++) o[r][j] *= alpha;
    }
    dec_st<R>(ps + lane * R, pr);
    __syncwarp();
}

template <int R, int NV>
__global__ void __launch_bounds__(DEC_W * 32) attn_dec_kernel(const struct kn_cuda_attn_params p) {
    KN_DYN_SMEM(float4, dec_sm4);
    float *sm = (float *)dec_sm4;
    constexpr int D = NV * 8, SPI = 32 / NV;
    // key (and first value) loads in flight per lane: fewer when R accumulators already use many registers
    constexpr int KB = R >= 4 ? (NV < 8 ? NV : 8) : (NV < 16 ? NV : 16);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int sp = blockIdx.x, rb = blockIdx.y, h = blockIdx.z;
    const int grp = p.n_head / p.n_head_kv;
    const int nrows = p.n_tok * grp;
    const bool has_q = p.bits > 0;
    const struct kv_qfmt f = kv_qfmt_make(D, has_q ? p.group : 1, has_q ? p.bits : 2);
    const int qwords = has_q ? (int)(kv_q_block_bytes(f) / 4) : 0;
    const struct dec_smem L = dec_smem_make(R, D, qwords);
    float *qs = sm;

    int32_t qp[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int row = rb * R + r;
        qp[r] = row < nrows ? p.q_pos[row / grp] : INT_MIN;
    }
    for (int i = tid; i < R * D; i += DEC_W * 32) {
        const int r = i / D, row = rb * R + r;
        float v = 0.0f;
        if (row < nrows) v = p.q[((int64_t)(row / grp) * p.n_head + h * grp + row % grp) * D + i % D];
        qs[i] = v;
    }
    __syncthreads();

    const struct kn_cuda_attn_head hd = p.heads[h];
    const int n_chunks = hd.n_q + (hd.n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
    const int cbase = sp * DEC_W * p.chunks_per_warp;
    float *wa = sm + L.warp0 + warp * L.ws;
    uint32_t *stg = (uint32_t *)wa;
    float *qss = wa + L.qss;
    float *ps = wa + L.ps;
    const int seg = lane % NV, sub = lane / NV;

    float m[R], ls[R], oz[R], o[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) {
        m[r] = -INFINITY;
        ls[r] = 0.0f;
        oz[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) o[r][j] = 0.0f;
    }

    for (int k = 0; k < p.chunks_per_warp; k++) {
        const int c = cbase + warp + k * DEC_W;
        if (c >= n_chunks) break;
        float l[R];
#pragma unroll
        for (int r = 0; r < R; r++) l[r] = 0.0f;
        if (c >= hd.n_q) {
            // ---- fp block
            const int b = c - hd.n_q;
            const unsigned char *blk = (const unsigned char *)p.ptrs[hd.fp_off + b];
            const int nslot = min(KV_FP_BLOCK, hd.n_fp - KV_FP_BLOCK * b);
            const int slot_base = hd.n_q * p.group + KV_FP_BLOCK * b;
            const int32_t pos = __ldg((const int32_t *)blk + lane);
            const uint4 *kr = (const uint4 *)(blk + kv_fp_off_k(D)) + lane * NV;
            const uint4 *vbase = (const uint4 *)(blk + kv_fp_off_v(D)) + lane; // + 32 i: slot sub + SPI i, seg
            uint4 vq[KB];
#pragma unroll
            for (int i = 0; i < KB; i++) vq[i] = __ldg(vbase + 32 * i);
#pragma unroll
            for (int kb = 0; kb < NV; kb += KB) {
                uint4 kq[KB];
#pragma unroll
                for (int i = 0; i < KB; i++) kq[i] = __ldg(kr + kb + i);
#pragma unroll
                for (int i = 0; i < KB; i++) {
                    float kf[8];
                    dec_h8(kq[i], kf);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        const float4 qa = *(const float4 *)(qs + r * D + 8 * (kb + i));
                        const float4 qb = *(const float4 *)(qs + r * D + 8 * (kb + i) + 4);
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
            }
            const bool alive = lane < nslot;
            bool any = false;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const bool vis = alive && att_visible(pos, qp[r], p.window);
                any |= vis;
                l[r] = vis ? p.scale * l[r] : -INFINITY;
            }
            const uint32_t vmask = __ballot_sync(KN_FULL_MASK, any);
            if (p.probs) dec_probs<R>(p, l, rb, grp, nrows, h, slot_base, lane, nslot);
            dec_softmax<R>(l, m, ls, oz, o, ps, lane);
#pragma unroll
            for (int vb = 0; vb < NV; vb += KB) {
                if (vb > 0) {
#pragma unroll
                    for (int i = 0; i < KB; i++) vq[i] = __ldg(vbase + 32 * (vb + i));
                }
#pragma unroll
                for (int i = 0; i < KB; i++) {
                    const int t = sub + SPI * (vb + i);
                    uint4 u = vq[i];
                    if (!((vmask >> t) & 1u)) u = make_uint4(0u, 0u, 0u, 0u);
                    float vf[8], pr[R];
                    dec_h8(u, vf);
                    dec_ld<R>(ps + t * R, pr);
#pragma unroll
                    for (int r = 0; r < R; r++)
#pragma unroll
                        for (int j = 0; j < 8; j++) o[r][j] = fmaf(pr[r], vf[j], o[r][j]);
                }
            }
        } else {
            // ---- packed group: stage it whole
            const uint4 *src = (const uint4 *)p.ptrs[hd.q_off + c];
            const int n16 = qwords >> 2;
            for (int i0 = 0; i0 < n16; i0 += 32 * 8) {
                uint4 tmp[8];
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int i = i0 + 32 * j + lane;
                    if (i < n16) tmp[j] = __ldg(src + i);
                }
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int i = i0 + 32 * j + lane;
                    if (i < n16) ((uint4 *)stg)[i] = tmp[j];
                }
            }
            __syncwarp();
            const int G = f.G, B = f.B;
            const uint32_t live = stg[1];
            const bool alive = lane < G && ((live >> lane) & 1u);
            const int32_t pos = alive ? (int32_t)stg[0] + (int32_t)((const uint16_t *)(stg + 2))[lane] : 0;
            bool vis[R];
            bool any = false;
#pragma unroll
            for (int r = 0; r < R; r++) {
                vis[r] = alive && att_visible(pos, qp[r], p.window);
                any |= vis[r];
            }
            const uint32_t vmask = __ballot_sync(KN_FULL_MASK, any);
            // q * key scale per channel, and the zero term sum_d q_d z_d
            const unsigned char *sb = (const unsigned char *)stg;
            const kn_half *ks = (const kn_half *)(sb + kv_q_off_kscale(f));
            const kn_half *kz = (const kn_half *)(sb + kv_q_off_kzero(f));
            float bz[R];
#pragma unroll
            for (int r = 0; r < R; r++) bz[r] = 0.0f;
            for (int d = lane; d < D; d += 32) {
                const float s = kn_h2f(ks[d]), z = kn_h2f(kz[d]);
                float qv[R];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const float x = qs[r * D + d];
                    qv[r] = x * s;
                    bz[r] = fmaf(x, z, bz[r]);
                }
                dec_st<R>(qss + d * R, qv);
            }
#pragma unroll
            for (int r = 0; r < R; r++) bz[r] = kn_warp_sum(bz[r]);
            __syncwarp();
            // keys: lane = token
            const uint32_t *kc = (const uint32_t *)(sb + kv_q_off_kcode(f));
            const int lB = B == 1 ? 0 : B == 2 ? 1 : B == 4 ? 2 : 3;
            const int lper = 5 - lB, per = 1 << lper;
            const uint32_t mask = (1u << B) - 1u;
            const int t = lane < G ? lane : 0;
            if ((G & (per - 1)) == 0) { // a token's code sits at the same bit of every channel's words
                const int wstep = G >> lper;
                const uint32_t *wp = kc + (t >> lper);
                const int sh = (t & (per - 1)) << lB;
#pragma unroll 8
                for (int d = 0; d < D; d++) {
                    const float cf = dec_code_f((wp[d * wstep] >> sh) & mask);
                    float qv[R];
                    dec_ld<R>(qss + d * R, qv);
#pragma unroll
                    for (int r = 0; r < R; r++) l[r] = fmaf(qv[r], cf, l[r]);
                }
            } else {
#pragma unroll 4
                for (int d = 0; d < D; d++) {
                    const int idx = d * G + t;
                    const float cf = dec_code_f((kc[idx >> lper] >> ((idx & (per - 1)) << lB)) & mask);
                    float qv[R];
                    dec_ld<R>(qss + d * R, qv);
#pragma unroll
                    for (int r = 0; r < R; r++) l[r] = fmaf(qv[r], cf, l[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++) l[r] = vis[r] ? p.scale * (l[r] + bz[r]) : -INFINITY;
            if (p.probs) dec_probs<R>(p, l, rb, grp, nrows, h, c * G, lane, G);
            dec_softmax<R>(l, m, ls, oz, o, ps, lane);
            // values: lane = 8 channels [8 seg, 8 seg + 8) of tokens sub + SPI i
            const uint32_t *vc = (const uint32_t *)(sb + kv_q_off_vcode(f));
            const kn_half *vs = (const kn_half *)(sb + kv_q_off_vscale(f));
            const kn_half *vz = (const kn_half *)(sb + kv_q_off_vzero(f));
            const int nvg = D / f.VG, vgi = (8 * seg) / f.VG;
#pragma unroll 4
            for (int t0 = 0; t0 < G; t0 += SPI) {
                const int tt = t0 + sub;
                const bool use = tt < G && ((vmask >> tt) & 1u);
                const int tc = tt < G ? tt : 0;
                const int qi = tc * nvg + vgi;
                float s = kn_h2f(vs[qi]), z = kn_h2f(vz[qi]);
                if (!use) {
                    s = 0.0f;
                    z = 0.0f;
                }
                const uint32_t bit0 = (uint32_t)(tc * D + 8 * seg) << lB;
                const uint32_t lo = vc[bit0 >> 5] >> (bit0 & 31u);
                float cf[8];
                if (B == 8) {
                    const uint32_t hi = vc[(bit0 >> 5) + 1];
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        cf[j] = dec_code_f((lo >> (8 * j)) & 0xffu);
                        cf[4 + j] = dec_code_f((hi >> (8 * j)) & 0xffu);
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < 8; j++) cf[j] = dec_code_f((lo >> (j * B)) & mask);
                }
                float pr[R];
                dec_ld<R>(ps + tt * R, pr);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const float a = pr[r] * s;
                    oz[r] = fmaf(pr[r], z, oz[r]);
#pragma unroll
                    for (int j = 0; j < 8; j++) o[r][j] = fmaf(a, cf[j], o[r][j]);
                }
            }
        }
        __syncwarp(); // ps, the staged group and qss are rewritten by the next chunk
    }

    // ---- warps -> one partial per row
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int j = 0; j < 8; j++) o[r][j] += oz[r];
#pragma unroll
        for (int off = NV; off < 32; off <<= 1)
#pragma unroll
            for (int j = 0; j < 8; j++) o[r][j] += __shfl_xor_sync(KN_FULL_MASK, o[r][j], off);
        ls[r] = kn_warp_sum(ls[r]);
    }
    __syncthreads(); // the merge area overlaps the warp areas
    float *mg = sm + L.merge;
    if (lane < NV) {
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int j = 0; j < 8; j++) mg[(warp * R + r) * (D + 2) + 8 * lane + j] = o[r][j];
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            mg[(warp * R + r) * (D + 2) + D] = m[r];
            mg[(warp * R + r) * (D + 2) + D + 1] = ls[r];
        }
    }
    __syncthreads();
    float *wt = sm + L.tail, *Mr = wt + dec_r4(R * DEC_W), *Lr = Mr + R;
    float *cm = Mr + dec_r4(2 * R), *cl = cm + R * DEC_FS;
    int *flag = (int *)(sm + L.total - 4);
    if (tid < R) {
        const int r = tid;
        float M = -INFINITY;
        for (int w = 0; w < DEC_W; w++)
            if (mg[(w * R + r) * (D + 2) + D + 1] > 0.0f) M = fmaxf(M, mg[(w * R + r) * (D + 2) + D]);
        float Lt = 0.0f;
        for (int w = 0; w < DEC_W; w++) {
            const float lw = mg[(w * R + r) * (D + 2) + D + 1];
            const float e = lw > 0.0f ? expf(mg[(w * R + r) * (D + 2) + D] - M) : 0.0f;
            wt[r * DEC_W + w] = e;
            Lt += lw * e;
        }
        Mr[r] = M;
        Lr[r] = Lt;
    }
    __syncthreads();
    const bool direct = p.n_split == 1 && !p.probs;
    for (int i = tid; i < R * D; i += DEC_W * 32) {
        const int r = i / D, d = i % D, row = rb * R + r;
        if (row >= nrows) continue;
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_W; w++) acc = fmaf(wt[r * DEC_W + w], mg[(w * R + r) * (D + 2) + d], acc);
        const int64_t orow = (int64_t)(row / grp) * p.n_head + h * grp + row % grp;
        if (direct) {
            const float Lt = Lr[r];
            p.out[orow * D + d] = acc * (Lt > 0.0f ? 1.0f / Lt : 0.0f);
        } else {
            p.part[(orow * p.n_split + sp) * (D + 2) + d] = acc;
        }
    }
    if (!direct && tid < R) {
        const int row = rb * R + tid;
        if (row < nrows) {
            const int64_t orow = (int64_t)(row / grp) * p.n_head + h * grp + row % grp;
            float *pt = p.part + (orow * p.n_split + sp) * (D + 2);
            pt[D] = Mr[tid];
            pt[D + 1] = Lr[tid];
        }
    }
    if (direct || !p.fuse_combine) return;

    // ---- the last split block of this (head, row block) merges all splits
    __threadfence();
    __syncthreads();
    int32_t *ctr = p.counters + (int64_t)h * gridDim.y + rb;
    if (tid == 0) *flag = atomicAdd(ctr, 1) == p.n_split - 1;
    __syncthreads();
    if (!*flag) return;
    __threadfence();
    const int S = p.n_split;
    for (int i = tid; i < R * S; i += DEC_W * 32) {
        const int r = i / S, s = i % S, row = rb * R + r;
        float mv = -INFINITY, lv = 0.0f;
        if (row < nrows) {
            const int64_t orow = (int64_t)(row / grp) * p.n_head + h * grp + row % grp;
            const float *pt = p.part + (orow * S + s) * (D + 2);
            mv = __ldcg(pt + D);
            lv = __ldcg(pt + D + 1);
        }
        cm[r * DEC_FS + s] = mv;
        cl[r * DEC_FS + s] = lv;
    }
    __syncthreads();
    if (tid < R) {
        const int r = tid;
        float M = -INFINITY;
        for (int s = 0; s < S; s++)
            if (cl[r * DEC_FS + s] > 0.0f) M = fmaxf(M, cm[r * DEC_FS + s]);
        float Lt = 0.0f;
        for (int s = 0; s < S; s++) {
            const float lv = cl[r * DEC_FS + s];
            const float e = lv > 0.0f ? expf(cm[r * DEC_FS + s] - M) : 0.0f;
            cm[r * DEC_FS + s] = e;
            Lt += lv * e;
        }
        Lr[r] = Lt;
    }
    __syncthreads();
    for (int i = tid; i < R * D; i += DEC_W * 32) {
        const int r = i / D, d = i % D, row = rb * R + r;
        if (row >= nrows) continue;
        const int64_t orow = (int64_t)(row / grp) * p.n_head + h * grp + row % grp;
        const float *pt = p.part + orow * S * (D + 2) + d;
        float acc = 0.0f;
#pragma unroll 8
        for (int s = 0; s < S; s++) acc = fmaf(cm[r * DEC_FS + s], __ldcg(pt + (int64_t)s * (D + 2)), acc);
        const float Lt = Lr[r];
        p.out[orow * D + d] = acc * (Lt > 0.0f ? 1.0f / Lt : 0.0f);
    }
    if (tid == 0) *ctr = 0; // ready for the next launch
}

// Block-wide max (is_max) or sum of v; red holds >= 32 floats. Every thread gets the result.
__device__ float dec_block_reduce(float v, float *red, bool is_max) {
    v = is_max ? kn_warp_max(v) : kn_warp_sum(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); i++) r = is_max ? fmaxf(r, red[i]) : r + red[i];
    return r;
}

#define DEC_COMBINE_THREADS 256

// Merges the split partials of row blockIdx.x (= tok * n_head + hq) and normalises its probabilities. Dynamic
// shared memory: n_split + DEC_COMBINE_THREADS + 32 floats.
__global__ void __launch_bounds__(DEC_COMBINE_THREADS) attn_dec_combine_kernel(const struct kn_cuda_attn_params p) {
    KN_DYN_SMEM(float, csm);
    const int row = blockIdx.x, tid = threadIdx.x;
    const int D = p.D, S = p.n_split;
    float *w = csm, *acc_s = csm + S, *red = acc_s + DEC_COMBINE_THREADS;
    const float *pt = p.part + (int64_t)row * S * (D + 2);
    float M = -INFINITY;
    for (int s = tid; s < S; s += DEC_COMBINE_THREADS)
        if (pt[(int64_t)s * (D + 2) + D + 1] > 0.0f) M = fmaxf(M, pt[(int64_t)s * (D + 2) + D]);
    M = dec_block_reduce(M, red, true);
    float Ls = 0.0f;
    for (int s = tid; s < S; s += DEC_COMBINE_THREADS) {
        const float l = pt[(int64_t)s * (D + 2) + D + 1];
        const float e = l > 0.0f ? expf(pt[(int64_t)s * (D + 2) + D] - M) : 0.0f;
        w[s] = e;
        Ls += l * e;
    }
    const float L = dec_block_reduce(Ls, red, false); // its barriers also publish w[]
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    const int ng = DEC_COMBINE_THREADS / D; // D <= 256 divides the block
    const int d = tid % D, g = tid / D;
    float acc = 0.0f;
    if (g < ng)
        for (int s = g; s < S; s += ng) acc = fmaf(w[s], pt[(int64_t)s * (D + 2) + d], acc);
    acc_s[tid] = acc;
    __syncthreads();
    if (tid < D) {
        float a = 0.0f;
        for (int i = 0; i < ng; i++) a += acc_s[i * D + tid];
        p.out[(int64_t)row * D + tid] = a * inv;
    }
    if (p.probs) {
        const int tk = row / p.n_head, hq = row % p.n_head;
        const int h = hq / (p.n_head / p.n_head_kv);
        const int n_slots = p.heads[h].n_q * p.group + p.heads[h].n_fp;
        float *pr = p.probs + ((int64_t)hq * p.n_tok + tk) * p.probs_stride;
        for (int j = tid; j < p.probs_stride; j += DEC_COMBINE_THREADS) {
            const float v = j < n_slots ? pr[j] : -INFINITY;
            pr[j] = (L > 0.0f && v != -INFINITY) ? expf(v - M) * inv : 0.0f;
        }
    }
}

extern "C" size_t kn_cuda_attention_decode_smem(int rows_per_warp, int D, int bits, int group) {
    const int R = rows_per_warp;
    if (D != 8 && D != 16 && D != 32 && D != 64 && D != 128 && D != 256) return 0;
    if (R != 1 && R != 2 && R != 4 && R != 8) return 0;
    int qwords = 0;
    if (bits > 0) {
        const struct kv_qfmt f = kv_qfmt_make(D, group, bits);
        if (!kvq_fmt_ok(f) || f.VG % 8 != 0) return 0;
        qwords = (int)(kv_q_block_bytes(f) / 4);
    }
    return (size_t)dec_smem_make(R, D, qwords).total * sizeof(float);
}

template <int R, int NV>
static int dec_launch(cudaStream_t st, const struct kn_cuda_attn_params *p, dim3 grid, size_t smem) {
    if (smem > 48u * 1024u) {
        cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void *>(&attn_dec_kernel<R, NV>),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return (int)e;
    }
    KN_LAUNCH((attn_dec_kernel<R, NV>), grid, DEC_W * 32, smem, st, *p);
    return kn_cuda_launch_status();
}

template <int R>
static int dec_launch_d(cudaStream_t st, const struct kn_cuda_attn_params *p, dim3 grid, size_t smem) {
    switch (p->D) {
    case 8: return dec_launch<R, 1>(st, p, grid, smem);
    case 16: return dec_launch<R, 2>(st, p, grid, smem);
    case 32: return dec_launch<R, 4>(st, p, grid, smem);
    case 64: return dec_launch<R, 8>(st, p, grid, smem);
    case 128: return dec_launch<R, 16>(st, p, grid, smem);
    case 256: return dec_launch<R, 32>(st, p, grid, smem);
    default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int kn_cuda_attention_decode(void *stream, const struct kn_cuda_attn_params *p) {
    if (p->n_tok <= 0) return 0;
    const int R = p->rows_per_warp;
    const size_t smem = kn_cuda_attention_decode_smem(R, p->D, p->bits, p->group);
    if (!smem || smem > (size_t)p->smem_optin || p->n_head_kv <= 0 || p->n_split < 1 || p->chunks_per_warp < 1 ||
        (p->fuse_combine && (p->probs || p->n_split > KN_CUDA_DEC_FUSE_SPLITS || !p->counters)))
        return (int)cudaErrorInvalidValue;
    cudaStream_t st = (cudaStream_t)stream;
    const int grp = p->n_head / p->n_head_kv;
    const int n_rb = (p->n_tok * grp + R - 1) / R;
    const dim3 grid((unsigned)p->n_split, (unsigned)n_rb, (unsigned)p->n_head_kv);
    int rc;
    switch (R) {
    case 1: rc = dec_launch_d<1>(st, p, grid, smem); break;
    case 2: rc = dec_launch_d<2>(st, p, grid, smem); break;
    case 4: rc = dec_launch_d<4>(st, p, grid, smem); break;
    case 8: rc = dec_launch_d<8>(st, p, grid, smem); break;
    default: return (int)cudaErrorInvalidValue;
    }
    if (rc) return rc;
    if ((p->n_split > 1 && !p->fuse_combine) || p->probs) {
        const size_t cs = ((size_t)p->n_split + DEC_COMBINE_THREADS + 32) * sizeof(float);
        KN_LAUNCH((attn_dec_combine_kernel), (unsigned)(p->n_tok * p->n_head), DEC_COMBINE_THREADS, cs, st, *p);
        rc = kn_cuda_launch_status();
    }
    return rc;
}
