// kernels/kn_cpu_matmul.c — CPU matmul on GGML-quantised weights with fp32 activations, and get_rows.
//
// Two SIMD paths (AVX2+FMA+F16C), both reading W's own blocks (no fp32 copy of the weights):
//  * dot path (n_tok < KN_MM_PANEL_MIN, decode): per row, each 256-value unit is unpacked to int8 codes plus
//    per-sub-block scales (and min terms) in L1, converted to fp32 in registers and FMA'd against up to 4
//    tokens at once. Min terms use precomputed 32-value sums of x: sum_j m_j * xsum_j.
//  * panel path (prefill): x is packed as 8-token tiles (k-major, 8 tokens per k), a 6-row x KC-column slice
//    of W is dequantised into an L1 panel, and a 6x16 register-blocked kernel broadcasts one weight against
//    16 tokens per FMA pair, so each dequantised weight serves every token of the batch. With AVX-512 the
//    tiles hold 16 tokens and the kernel is 12 rows x 32 tokens in 24 zmm accumulators (TinyLlama shape,
//    128 tokens, 2 threads: 57 -> 68-78 tok/s end to end); the next panel's weights are prefetched.
// With int8 activations on (the app's default), decode calls go to kn_cpu_q8.c and batches, where the build
// has AVX-512 VNNI, to kn_cpu_gemm8.c; float weights and --exact-matmul stay here.
// The scalar path (no AVX2, or forced for tests) dequantises one unit at a time and does plain dot products.
// Each output element is computed by one thread with a fixed operation order, so results do not depend on
// the thread count.
#include "kernels/kn_cpu_impl.h"

#include <string.h>

#include "kernels/kn_quant.h"
#include "kernels/kn_cpu_unpack.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KN_SIMD 1
#include <immintrin.h>
#endif

#define KN_MM_PANEL_MIN 8 // n_tok from which the panel path is used
#define KN_MM_KC 512      // columns per panel slice (a multiple of 256)
#if defined(__AVX512F__) && defined(__AVX512DQ__) && !defined(KN_NO_AVX512)
#define KN_MM_AVX512 1 // the panel micro-kernels use 512-bit FMAs: 16-token tiles, one zmm per tile column
#define KN_MM_TILE 16  // tokens per packed x tile
#define KN_MM_MR 12    // rows per panel micro-kernel: 24 zmm accumulators
#else
#define KN_MM_TILE 8 // tokens per packed x tile
#define KN_MM_MR 6   // rows per panel micro-kernel: 12 ymm accumulators
#endif

// ---- scalar unit dequantisation (the portable path) --------------------------------------------------

// Values per unit: 256 for k-quants, 32 for the legacy types, 1 for F32/F16/BF16.

static int kn_cpu_unit_size(int type) {
    switch (type) {
    case KN_F32: case KN_F16: case KN_BF16: return 1;
    case KN_Q4_0: case KN_Q4_1: case KN_Q5_0: case KN_Q5_1: case KN_Q8_0: return KN_QK;
    case KN_Q4_K: case KN_Q5_K: case KN_Q6_K: return KN_QK_K;
    default: return 0;
    }
}

static float h2f(kn_half h) { return kn_half_to_float(h); }

// 6-bit scale and min j (0..7) of a Q4_K/Q5_K super-block.
static void kq_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Scalar dequantisation of one unit of `type` (256 values for k-quants, 32 for the legacy types, 1 for
// F32/F16/BF16) into out(unit); the portable matmul and the float-type tails use it.
static void kn_cpu_dequant_unit_scalar(int type, const void *blk, float *out) {
    switch (type) {
    case KN_F32: memcpy(out, blk, 4); break;
    case KN_F16: { kn_half h; memcpy(&h, blk, 2); out[0] = h2f(h); } break;
    case KN_BF16: { kn_bf16 h; memcpy(&h, blk, 2); out[0] = kn_bf16_to_float(h); } break;
    case KN_Q4_0: {
        const struct kn_block_q4_0 *b = blk;
        float d = h2f(b->d);
        for (int j = 0; j < 16; j++) {
            out[j] = (float)((b->qs[j] & 0xF) - 8) * d;
            out[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    } break;
    case KN_Q4_1: {
        const struct kn_block_q4_1 *b = blk;
        float d = h2f(b->d), m = h2f(b->m);
        for (int j = 0; j < 16; j++) {
            out[j] = (float)(b->qs[j] & 0xF) * d + m;
            out[j + 16] = (float)(b->qs[j] >> 4) * d + m;
        }
    } break;
    case KN_Q5_0: case KN_Q5_1: {
        const uint8_t *qs, *qhp;
        float d, m = 0.0f;
        int off;
        if (type == KN_Q5_0) {
            const struct kn_block_q5_0 *b = blk;
            d = h2f(b->d); qs = b->qs; qhp = b->qh; off = 16;
        } else {
            const struct kn_block_q5_1 *b = blk;
            d = h2f(b->d); m = h2f(b->m); qs = b->qs; qhp = b->qh; off = 0;
        }
        uint32_t qh;
        memcpy(&qh, qhp, 4);
        for (int j = 0; j < 16; j++) {
            int q0 = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            out[j] = (float)(q0 - off) * d + m;
            out[j + 16] = (float)(q1 - off) * d + m;
        }
    } break;
    case KN_Q8_0: {
        const struct kn_block_q8_0 *b = blk;
        float d = h2f(b->d);
        for (int j = 0; j < 32; j++) out[j] = (float)b->qs[j] * d;
    } break;
    case KN_Q4_K: case KN_Q5_K: {
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        if (type == KN_Q4_K) {
            const struct kn_block_q4_k *b = blk;
            d = h2f(b->d); dmin = h2f(b->dmin); scales = b->scales; qs = b->qs;
        } else {
            const struct kn_block_q5_k *b = blk;
            d = h2f(b->d); dmin = h2f(b->dmin); scales = b->scales; qs = b->qs; qh = b->qh;
        }
        for (int c = 0; c < 4; c++) { // 64 values per chunk: low nibbles, then high nibbles
            int sc0, m0, sc1, m1;
            kq_scale_min(scales, 2 * c, &sc0, &m0);
            kq_scale_min(scales, 2 * c + 1, &sc1, &m1);
            float d0 = d * (float)sc0, mm0 = dmin * (float)m0, d1 = d * (float)sc1, mm1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++) {
                int q0 = qs[32 * c + l] & 0xF, q1 = qs[32 * c + l] >> 4;
                if (qh) {
                    q0 |= ((qh[l] >> (2 * c)) & 1) << 4;
                    q1 |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                out[64 * c + l] = d0 * (float)q0 - mm0;
                out[64 * c + 32 + l] = d1 * (float)q1 - mm1;
            }
        }
    } break;
    case KN_Q6_K: {
        const struct kn_block_q6_k *b = blk;
        float d = h2f(b->d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            const int8_t *sc = b->scales + 8 * h;
            float *o = out + 128 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                o[l] = d * (float)sc[is] * (float)q1;
                o[l + 32] = d * (float)sc[is + 2] * (float)q2;
                o[l + 64] = d * (float)sc[is + 4] * (float)q3;
                o[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    } break;
    default: break;
    }
}

// ---- shared context ----------------------------------------------------------------------------------

struct mm_ctx {
    struct kn_cpu *cpu;
    int type;
    int64_t K, N;       // columns (n_cols) and rows (n_rows) of W
    size_t row_bytes;
    const uint8_t *w;   // (N) rows of row_bytes
    const float *x;     // (n_tok, K)
    float *y;           // (n_tok, N)
    int n_tok;
    int rows_per_task;
    const float *xsum;  // dot path: (n_tok, xsum_stride) sums of x over 32-value chunks, zero padded
    int64_t xsum_stride;
    const float *xp;    // panel path: (n_tiles, K, KN_MM_TILE) packed x
    int n_tiles;
    int n_pack;         // column chunks per tile while packing
};


// ---- portable path -----------------------------------------------------------------------------------

static void mm_scalar_task(void *vctx, int task, int tid) {
    (void)tid;
    const struct mm_ctx *c = vctx;
    int64_t r0 = (int64_t)task * c->rows_per_task;
    int64_t r1 = r0 + c->rows_per_task < c->N ? r0 + c->rows_per_task : c->N;
    int us = kn_cpu_unit_size(c->type);
    size_t ub = kn_type_block_bytes(c->type);
    float buf[KN_QK_K];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * c->row_bytes;
        for (int t0 = 0; t0 < c->n_tok; t0 += 4) {
            int nt = c->n_tok - t0 < 4 ? c->n_tok - t0 : 4;
            float acc[4] = {0, 0, 0, 0};
            if (us == 1) {
                for (int64_t k = 0; k < c->K; k++) {
                    kn_cpu_dequant_unit_scalar(c->type, row + (size_t)k * ub, buf);
                    for (int t = 0; t < nt; t++) acc[t] += buf[0] * c->x[(size_t)(t0 + t) * c->K + k];
                }
            } else {
                for (int64_t u = 0; u < c->K / us; u++) {
                    kn_cpu_dequant_unit_scalar(c->type, row + (size_t)u * ub, buf);
                    for (int t = 0; t < nt; t++) {
                        const float *xt = c->x + (size_t)(t0 + t) * c->K + u * us;
                        float s = 0.0f;
                        for (int i = 0; i < us; i++) s += buf[i] * xt[i];
                        acc[t] += s;
                    }
                }
            }
            for (int t = 0; t < nt; t++) c->y[(size_t)(t0 + t) * c->N + r] = acc[t];
        }
    }
}

#ifdef KN_SIMD
static int type_has_min(int type) {
    return type == KN_Q4_1 || type == KN_Q5_1 || type == KN_Q4_K || type == KN_Q5_K;
}

static inline __m128 cvt_u8x4(uint32_t v) { return _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)v))); }



static inline __m256 cvt8(const int8_t *c) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)c)));
}

#ifdef KN_MM_AVX512
static inline __m512 cvt16(const int8_t *c) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)c)));
}
// The two 8-lane halves of z added: lane j = z[j] + z[j + 8].
static inline __m256 half_sum(__m512 z) {
    return _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
}
#endif

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ---- dot path: rows [r0, r1), tokens t0..t0+T-1 (T = 1..4; type and T are constants after inlining) ----
// Per row and token the lanes of one accumulator collect every product; min terms (bias·xsum) go into the
// same lanes. T == 1 uses two accumulators (low/high sub-blocks) to halve the dependency chain.

#define KN_AI __attribute__((always_inline)) static inline

// The vector of the panel micro-kernels and the Q4_K decode kernel: zmm with AVX-512, ymm otherwise. MM_W
// lanes = KN_MM_TILE (one packed tile column); MM_LOADQ(p) zero-extends MM_W code bytes to dwords;
// MM_SUBMIN(acc, m, x) subtracts the 8 lanes m·x from acc (the low 8 lanes with AVX-512).
#ifdef KN_MM_AVX512
#define MM_V __m512
#define MM_VI __m512i
#define MM_VZERO _mm512_setzero_ps
#define MM_VLOAD _mm512_load_ps
#define MM_VLOADU _mm512_loadu_ps
#define MM_VSET1(p) _mm512_set1_ps(*(p))
#define MM_VFMA _mm512_fmadd_ps
#define MM_VMUL _mm512_mul_ps
#define MM_VADD _mm512_add_ps
#define MM_VSTORE _mm512_storeu_ps
#define MM_VHSUM _mm512_reduce_add_ps
#define MM_VI_SET1 _mm512_set1_epi32
#define MM_VI_AND _mm512_and_si512
#define MM_VI_SRLI _mm512_srli_epi32
#define MM_VCVT _mm512_cvtepi32_ps
#define MM_LOADQ(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define MM_SUBMIN(acc, m, x) _mm512_sub_ps(acc, _mm512_zextps256_ps512(_mm256_mul_ps(m, x)))
#else
#define MM_V __m256
#define MM_VI __m256i
#define MM_VZERO _mm256_setzero_ps
#define MM_VLOAD _mm256_load_ps
#define MM_VLOADU _mm256_loadu_ps
#define MM_VSET1(p) _mm256_broadcast_ss(p)
#define MM_VFMA _mm256_fmadd_ps
#define MM_VMUL _mm256_mul_ps
#define MM_VADD _mm256_add_ps
#define MM_VSTORE _mm256_storeu_ps
#define MM_VHSUM hsum8
#define MM_VI_SET1 _mm256_set1_epi32
#define MM_VI_AND _mm256_and_si256
#define MM_VI_SRLI _mm256_srli_epi32
#define MM_VCVT _mm256_cvtepi32_ps
#define MM_LOADQ(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p)))
#define MM_SUBMIN(acc, m, x) _mm256_fnmadd_ps(m, x, acc)
#endif
#define MM_W KN_MM_TILE

// Q4_K straight from the weights: MM_W code bytes -> MM_W dwords give MM_W low-nibble and MM_W high-nibble
// values.
// One row at a time: interleaving two rows' streams measured ~1.8x slower when the weights come from DRAM
// (and no faster when they are cached); copying each super-block into an L1 staging buffer one step ahead
// did not help either.

KN_AI void dot_q4k_row(const struct mm_ctx *c, int64_t r, int t0, const int T) {
    const int64_t K = c->K, nsb = K / KN_QK_K;
    const float *xt[4], *xs[4];
    for (int t = 0; t < T; t++) {
        xt[t] = c->x + (size_t)(t0 + t) * K;
        xs[t] = c->xsum + (size_t)(t0 + t) * c->xsum_stride;
    }
    const MM_VI m4 = MM_VI_SET1(15);
    _Alignas(32) float sc[8];
    const struct kn_block_q4_k *row = (const struct kn_block_q4_k *)(c->w + (size_t)r * c->row_bytes);
    MM_V acc0[4], acc1[4];
    KN_UNROLL
    for (int t = 0; t < T; t++) acc0[t] = acc1[t] = MM_VZERO();
    for (int64_t i = 0; i < nsb; i++) {
        const struct kn_block_q4_k *b = row + i;
        kn_prefetch_ahead(b, sizeof *b);
        __m256 vsc, vm;
        kn_q4k_scales8(b, &vsc, &vm);
        _mm256_store_ps(sc, vsc); // one store: the broadcasts below forward from it
        KN_UNROLL
        for (int t = 0; t < T; t++) acc1[t] = MM_SUBMIN(acc1[t], vm, _mm256_loadu_ps(xs[t] + 8 * i));
        KN_UNROLL
        for (int ch = 0; ch < 4; ch++) {
            MM_V sl[4], sh[4];
            KN_UNROLL
            for (int m = 0; m < 32 / MM_W; m++) {
                MM_VI q = MM_LOADQ(b->qs + 32 * ch + MM_W * m);
                MM_V wl = MM_VCVT(MM_VI_AND(q, m4));
                MM_V wh = MM_VCVT(MM_VI_SRLI(q, 4));
                KN_UNROLL
                for (int t = 0; t < T; t++) {
                    const float *xp = xt[t] + 256 * i + 64 * ch + MM_W * m;
                    if (m == 0) {
                        sl[t] = MM_VMUL(wl, MM_VLOADU(xp));
                        sh[t] = MM_VMUL(wh, MM_VLOADU(xp + 32));
                    } else {
                        sl[t] = MM_VFMA(wl, MM_VLOADU(xp), sl[t]);
                        sh[t] = MM_VFMA(wh, MM_VLOADU(xp + 32), sh[t]);
                    }
                }
            }
            MM_V s0 = MM_VSET1(sc + 2 * ch), s1 = MM_VSET1(sc + 2 * ch + 1);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                acc0[t] = MM_VFMA(s0, sl[t], acc0[t]);
                acc1[t] = MM_VFMA(s1, sh[t], acc1[t]);
            }
        }
    }
    KN_UNROLL
    for (int t = 0; t < T; t++) c->y[(size_t)(t0 + t) * c->N + r] = MM_VHSUM(MM_VADD(acc0[t], acc1[t]));
}

KN_AI void dot_q4k(const struct mm_ctx *c, int64_t r0, int64_t r1, int t0, const int T) {
    for (int64_t r = r0; r < r1; r++) dot_q4k_row(c, r, t0, T);
}

// Q8_0 straight from the weights, 8 blocks (256 values) per step.
KN_AI void dot_q8_0(const struct mm_ctx *c, int64_t r0, int64_t r1, int t0, const int T) {
    const int64_t K = c->K, nbk = K / KN_QK;
    const float *xt[4];
    for (int t = 0; t < T; t++) xt[t] = c->x + (size_t)(t0 + t) * K;
    for (int64_t r = r0; r < r1; r++) {
        const struct kn_block_q8_0 *blk = (const struct kn_block_q8_0 *)(c->w + (size_t)r * c->row_bytes);
        __m256 acc0[4], acc1[4];
        KN_UNROLL
        for (int t = 0; t < T; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nbk; i++) {
            const struct kn_block_q8_0 *b = blk + i;
            __m256 s[4];
            if ((i & 1) == 0) kn_prefetch_ahead(b, 2 * sizeof *b);
#ifdef KN_MM_AVX512
            __m512 w0 = cvt16(b->qs), w1 = cvt16(b->qs + 16);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                const float *xp = xt[t] + 32 * i;
                s[t] = half_sum(_mm512_fmadd_ps(w1, _mm512_loadu_ps(xp + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(xp))));
            }
#else
            __m256 w[4];
            KN_UNROLL
            for (int v = 0; v < 4; v++) w[v] = cvt8(b->qs + 8 * v);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                const float *xp = xt[t] + 32 * i;
                s[t] = _mm256_mul_ps(w[0], _mm256_loadu_ps(xp));
                s[t] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp + 8), s[t]);
                s[t] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp + 16), s[t]);
                s[t] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp + 24), s[t]);
            }
#endif
            __m256 d = _mm256_set1_ps(kn_h2f(b->d));
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                if (T == 1 && (i & 1)) acc1[t] = _mm256_fmadd_ps(d, s[t], acc1[t]);
                else acc0[t] = _mm256_fmadd_ps(d, s[t], acc0[t]);
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++)
            c->y[(size_t)(t0 + t) * c->N + r] = hsum8(T == 1 ? _mm256_add_ps(acc0[t], acc1[t]) : acc0[t]);
    }
}

// One sub-block of S (32 or 16) unpacked codes against T tokens: acc[t] += scale * Σ code·x.
KN_AI void sub_dot(const int8_t *cj, const float *const *xt, int64_t k, float scale, const int S, const int T,
                   __m256 *acc) {
    __m256 s[4];
#ifdef KN_MM_AVX512
    __m512 w[2];
    KN_UNROLL
    for (int v = 0; v < S / 16; v++) w[v] = cvt16(cj + 16 * v);
    KN_UNROLL
    for (int t = 0; t < T; t++) {
        __m512 z = _mm512_mul_ps(w[0], _mm512_loadu_ps(xt[t] + k));
        if (S == 32) z = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xt[t] + k + 16), z);
        s[t] = half_sum(z);
    }
#else
    __m256 w[4];
    KN_UNROLL
    for (int v = 0; v < S / 8; v++) w[v] = cvt8(cj + 8 * v);
    KN_UNROLL
    for (int t = 0; t < T; t++) {
        s[t] = _mm256_mul_ps(w[0], _mm256_loadu_ps(xt[t] + k));
        KN_UNROLL
        for (int v = 1; v < S / 8; v++) s[t] = _mm256_fmadd_ps(w[v], _mm256_loadu_ps(xt[t] + k + 8 * v), s[t]);
    }
#endif
    __m256 sc = _mm256_set1_ps(scale);
    KN_UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(sc, s[t], acc[t]);
}

// Every other quantised type through the unpacked unit (codes + scales + min terms in L1).
KN_AI void dot_unit(const struct mm_ctx *c, int64_t r0, int64_t r1, int t0, const int type, const int T) {
    const int us = kn_cpu_unit_size(type);
    const int64_t K = c->K;
    const int legacy = us == KN_QK;
    const int64_t n_blk = K / us;
    const int64_t n_full = legacy ? n_blk / 8 : n_blk; // full 256-value units
    const int tail = legacy ? (int)(n_blk % 8) : 0;
    const size_t ub = kn_type_block_bytes(type) * (legacy ? 8 : 1);
    const int has_min = type_has_min(type);
    const int S = type == KN_Q6_K ? 16 : 32, NS = KN_QK_K / S;
    const float *xt[4], *xs[4];
    for (int t = 0; t < T; t++) {
        xt[t] = c->x + (size_t)(t0 + t) * K;
        xs[t] = has_min ? c->xsum + (size_t)(t0 + t) * c->xsum_stride : NULL;
    }
    struct kn_unit ub2[2]; // unit i+1 is unpacked while unit i is consumed: the code stores have retired by then
    const int64_t n_units = n_full + (tail ? 1 : 0);
    // independent accumulator chains per token: the per-sub-block scale FMAs are latency-bound otherwise
    const int NA = T == 1 ? 4 : T == 2 ? 2 : 1;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * c->row_bytes;
        __m256 acc[4][4];
        KN_UNROLL
        for (int a = 0; a < NA; a++) {
            KN_UNROLL
            for (int t = 0; t < T; t++) acc[a][t] = _mm256_setzero_ps();
        }
        kn_unpack_unit(type, row, n_full ? 8 : tail, &ub2[0]);
        for (int64_t ui = 0; ui < n_units; ui++) {
            const struct kn_unit *u = &ub2[ui & 1];
            const int nb = ui == n_full ? tail : 8;
            kn_prefetch_ahead(row + (size_t)ui * ub, ub);
            if (ui + 1 < n_units)
                kn_unpack_unit(type, row + (size_t)(ui + 1) * ub, ui + 1 == n_full ? tail : 8, &ub2[(ui + 1) & 1]);
            const int64_t kb = ui * KN_QK_K;
            if (has_min) {
                __m256 vb = _mm256_loadu_ps(u->bias);
                KN_UNROLL
                for (int t = 0; t < T; t++)
                    acc[NA - 1][t] = _mm256_fmadd_ps(vb, _mm256_loadu_ps(xs[t] + 8 * ui), acc[NA - 1][t]);
            }
            if (nb == 8) {
                KN_UNROLL
                for (int j = 0; j < NS; j++) sub_dot(u->codes + S * j, xt, kb + S * j, u->scale[j], S, T, acc[j % NA]);
            } else {
                for (int j = 0; j < nb; j++) sub_dot(u->codes + 32 * j, xt, kb + 32 * j, u->scale[j], 32, T, acc[0]);
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++) {
            __m256 sum = acc[0][t];
            KN_UNROLL
            for (int a = 1; a < NA; a++) sum = _mm256_add_ps(sum, acc[a][t]);
            c->y[(size_t)(t0 + t) * c->N + r] = hsum8(sum);
        }
    }
}

// 8 weights of a float-type row at column k.
static inline __m256 load_w8(int type, const uint8_t *row, int64_t k) {
    if (type == KN_F32) return _mm256_loadu_ps((const float *)row + k);
    if (type == KN_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const kn_half *)row + k)));
    __m128i h = _mm_loadu_si128((const __m128i *)((const kn_bf16 *)row + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline float load_w1(int type, const uint8_t *row, int64_t k) {
    float f;
    kn_cpu_dequant_unit_scalar(type, row + (size_t)k * kn_type_block_bytes(type), &f);
    return f;
}

__attribute__((always_inline)) static inline void dot_rows_f(const struct mm_ctx *c, int64_t r0, int64_t r1,
                                                             int t0, const int T) {
    const int64_t K = c->K;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * c->row_bytes;
        __m256 acc0[4], acc1[4];
        KN_UNROLL
        for (int t = 0; t < T; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m256 w0 = load_w8(c->type, row, k), w1 = load_w8(c->type, row, k + 8);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                const float *xp = c->x + (size_t)(t0 + t) * K + k;
                acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), acc0[t]);
                acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp + 8), acc1[t]);
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++) {
            const float *xp = c->x + (size_t)(t0 + t) * K;
            float s = hsum8(_mm256_add_ps(acc0[t], acc1[t]));
            for (int64_t kk = k; kk < K; kk++) s += load_w1(c->type, row, kk) * xp[kk];
            c->y[(size_t)(t0 + t) * c->N + r] = s;
        }
    }
}

#define DOT_T(call_T)                                                                                      \
    switch (nt) {                                                                                          \
    case 1: call_T(1); break;                                                                              \
    case 2: call_T(2); break;                                                                              \
    case 3: call_T(3); break;                                                                              \
    default: call_T(4); break;                                                                             \
    }

static void mm_dot_task(void *vctx, int task, int tid) {
    (void)tid;
    const struct mm_ctx *c = vctx;
    int64_t r0 = (int64_t)task * c->rows_per_task;
    int64_t r1 = r0 + c->rows_per_task < c->N ? r0 + c->rows_per_task : c->N;
    for (int t0 = 0; t0 < c->n_tok; t0 += 4) {
        int nt = c->n_tok - t0 < 4 ? c->n_tok - t0 : 4;
        switch (c->type) {
#define CALL_F(T) dot_rows_f(c, r0, r1, t0, T)
#define CALL_Q4K(T) dot_q4k(c, r0, r1, t0, T)
#define CALL_Q80(T) dot_q8_0(c, r0, r1, t0, T)
#define CALL_U(TY, T) dot_unit(c, r0, r1, t0, TY, T)
#define CALL_Q6K(T) CALL_U(KN_Q6_K, T)
#define CALL_Q5K(T) CALL_U(KN_Q5_K, T)
#define CALL_Q40(T) CALL_U(KN_Q4_0, T)
#define CALL_Q41(T) CALL_U(KN_Q4_1, T)
#define CALL_Q50(T) CALL_U(KN_Q5_0, T)
#define CALL_Q51(T) CALL_U(KN_Q5_1, T)
        case KN_F32: case KN_F16: case KN_BF16: DOT_T(CALL_F) break;
        case KN_Q4_K: DOT_T(CALL_Q4K) break;
        case KN_Q8_0: DOT_T(CALL_Q80) break;
        case KN_Q6_K: DOT_T(CALL_Q6K) break;
        case KN_Q5_K: DOT_T(CALL_Q5K) break;
        case KN_Q4_0: DOT_T(CALL_Q40) break;
        case KN_Q4_1: DOT_T(CALL_Q41) break;
        case KN_Q5_0: DOT_T(CALL_Q50) break;
        default: DOT_T(CALL_Q51) break;
        }
    }
}

// ---- panel path --------------------------------------------------------------------------------------

#define KN_MM_PACK 1024 // columns per packing task

// Packs columns [k0, k0 + KN_MM_PACK) of one KN_MM_TILE-token tile of x into xp (k-major, KN_MM_TILE tokens
// per column, zeros for missing tokens), with 8x8 in-register transposes.
static void mm_pack_task(void *vctx, int task, int tid) {
    (void)tid;
    const struct mm_ctx *c = vctx;
    int tile = task / c->n_pack;
    int64_t k0 = (int64_t)(task % c->n_pack) * KN_MM_PACK;
    int64_t k1 = k0 + KN_MM_PACK < c->K ? k0 + KN_MM_PACK : c->K;
    int nt = c->n_tok - tile * KN_MM_TILE < KN_MM_TILE ? c->n_tok - tile * KN_MM_TILE : KN_MM_TILE;
    float *dst = (float *)(uintptr_t)c->xp + (size_t)tile * c->K * KN_MM_TILE;
    const float *src[KN_MM_TILE];
    for (int t = 0; t < KN_MM_TILE; t++) src[t] = t < nt ? c->x + (size_t)(tile * KN_MM_TILE + t) * c->K : NULL;
    for (int h = 0; h < KN_MM_TILE; h += 8) { // each 8 tokens of the tile: 8x8 transposes
        const float *const *sh = src + h;
        float *dh = dst + h;
        int64_t k = k0;
        if (nt >= h + 8) {
            for (; k + 8 <= k1; k += 8) {
                __m256 r0 = _mm256_loadu_ps(sh[0] + k), r1 = _mm256_loadu_ps(sh[1] + k);
                __m256 r2 = _mm256_loadu_ps(sh[2] + k), r3 = _mm256_loadu_ps(sh[3] + k);
                __m256 r4 = _mm256_loadu_ps(sh[4] + k), r5 = _mm256_loadu_ps(sh[5] + k);
                __m256 r6 = _mm256_loadu_ps(sh[6] + k), r7 = _mm256_loadu_ps(sh[7] + k);
                __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
                __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
                __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
                __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
                __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
                __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
                __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
                __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
                float *o = dh + k * KN_MM_TILE;
                _mm256_store_ps(o + 0 * KN_MM_TILE, _mm256_permute2f128_ps(u0, u4, 0x20));
                _mm256_store_ps(o + 1 * KN_MM_TILE, _mm256_permute2f128_ps(u1, u5, 0x20));
                _mm256_store_ps(o + 2 * KN_MM_TILE, _mm256_permute2f128_ps(u2, u6, 0x20));
                _mm256_store_ps(o + 3 * KN_MM_TILE, _mm256_permute2f128_ps(u3, u7, 0x20));
                _mm256_store_ps(o + 4 * KN_MM_TILE, _mm256_permute2f128_ps(u0, u4, 0x31));
                _mm256_store_ps(o + 5 * KN_MM_TILE, _mm256_permute2f128_ps(u1, u5, 0x31));
                _mm256_store_ps(o + 6 * KN_MM_TILE, _mm256_permute2f128_ps(u2, u6, 0x31));
                _mm256_store_ps(o + 7 * KN_MM_TILE, _mm256_permute2f128_ps(u3, u7, 0x31));
            }
        }
        for (; k < k1; k++)
            for (int t = 0; t < 8; t++) dh[k * KN_MM_TILE + t] = sh[t] ? sh[t][k] : 0.0f;
    }
}

// Dequantises columns [k0, k0+kc) of one row into out (kc floats); k0 and kc are multiples of the unit.
static void panel_fill_row(int type, const uint8_t *row, int64_t k0, int kc, float *out) {
    int us = kn_cpu_unit_size(type);
    if (us == 1) {
        int k = 0;
        for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(out + k, load_w8(type, row, k0 + k));
        for (; k < kc; k++) out[k] = load_w1(type, row, k0 + k);
        return;
    }
    struct kn_unit u;
    size_t bb = kn_type_block_bytes(type);
    const int64_t step = KN_QK_K;
    for (int64_t k = 0; k < kc; k += step) {
        int nb = 8;
        if (us == KN_QK) {
            int64_t left = (kc - k) / KN_QK;
            nb = left < 8 ? (int)left : 8;
        }
        kn_unpack_unit(type, row + (size_t)((k0 + k) / us) * bb, nb, &u);
        int n_sub = u.n_sub, sub = u.sub;
        float *o = out + k;
        for (int j = 0; j < n_sub; j++) {
#ifdef KN_MM_AVX512
            __m512 sc = _mm512_set1_ps(u.scale[j]), bi = _mm512_set1_ps(u.bias[(j * sub) / 32]);
            for (int v = 0; v < sub; v += 16) {
                __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(u.codes + j * sub + v));
                __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                _mm512_storeu_ps(o + j * sub + v, _mm512_fmadd_ps(wv, sc, bi));
            }
#else
            __m256 sc = _mm256_broadcast_ss(u.scale + j);
            __m256 bi = _mm256_set1_ps(u.bias[(j * sub) / 32]);
            for (int v = 0; v < sub; v += 8)
                _mm256_storeu_ps(o + j * sub + v, _mm256_fmadd_ps(cvt8(u.codes + j * sub + v), sc, bi));
#endif
        }
    }
}


// acc(R rows, 2 tiles of tokens) over kc columns: a = panel rows (stride KN_MM_KC, a constant so every row is
// a fixed displacement from one register), b0/b1 = two packed x tiles; row r, token t to out[2 MM_W r + t].
__attribute__((always_inline)) static inline void micro_16(const float *a, const float *b0, const float *b1, int kc,
                                                           const int R, float *out) {
    MM_V c0[KN_MM_MR], c1[KN_MM_MR];
    KN_UNROLL
    for (int r = 0; r < R; r++) c0[r] = c1[r] = MM_VZERO();
#if defined(__GNUC__)
#pragma GCC unroll 2
#endif
    for (int k = 0; k < kc; k++) {
        MM_V x0 = MM_VLOAD(b0 + MM_W * k), x1 = MM_VLOAD(b1 + MM_W * k);
        KN_UNROLL
        for (int r = 0; r < R; r++) {
            MM_V w = MM_VSET1(a + r * KN_MM_KC + k);
            c0[r] = MM_VFMA(w, x0, c0[r]);
            c1[r] = MM_VFMA(w, x1, c1[r]);
        }
    }
    KN_UNROLL
    for (int r = 0; r < R; r++) {
        MM_VSTORE(out + 2 * MM_W * r, c0[r]);
        MM_VSTORE(out + 2 * MM_W * r + MM_W, c1[r]);
    }
}

// acc(R rows, 1 tile): two chains per row over even / odd k (FMA latency).
__attribute__((always_inline)) static inline void micro_8(const float *a, const float *b0, int kc, const int R,
                                                          float *out) {
    MM_V c0[KN_MM_MR], c1[KN_MM_MR];
    KN_UNROLL
    for (int r = 0; r < R; r++) c0[r] = c1[r] = MM_VZERO();
    int k = 0;
    for (; k + 2 <= kc; k += 2) {
        MM_V x0 = MM_VLOAD(b0 + MM_W * k), x1 = MM_VLOAD(b0 + MM_W * k + MM_W);
        KN_UNROLL
        for (int r = 0; r < R; r++) {
            c0[r] = MM_VFMA(MM_VSET1(a + r * KN_MM_KC + k), x0, c0[r]);
            c1[r] = MM_VFMA(MM_VSET1(a + r * KN_MM_KC + k + 1), x1, c1[r]);
        }
    }
    for (; k < kc; k++) {
        MM_V x0 = MM_VLOAD(b0 + MM_W * k);
        KN_UNROLL
        for (int r = 0; r < R; r++) c0[r] = MM_VFMA(MM_VSET1(a + r * KN_MM_KC + k), x0, c0[r]);
    }
    KN_UNROLL
    for (int r = 0; r < R; r++) MM_VSTORE(out + 2 * MM_W * r, MM_VADD(c0[r], c1[r]));
}

// R (1..KN_MM_MR) as a compile-time constant of the micro-kernels.
#define MM_CASE(R, call)                                                                                     \
    case R:                                                                                                  \
        call(R);                                                                                             \
        break;
#ifdef KN_MM_AVX512
#define MM_ROWS(call)                                                                                        \
    MM_CASE(1, call) MM_CASE(2, call) MM_CASE(3, call) MM_CASE(4, call) MM_CASE(5, call) MM_CASE(6, call)  \
    MM_CASE(7, call) MM_CASE(8, call) MM_CASE(9, call) MM_CASE(10, call) MM_CASE(11, call) default : call(12);
#else
#define MM_ROWS(call)                                                                                        \
    MM_CASE(1, call) MM_CASE(2, call) MM_CASE(3, call) MM_CASE(4, call) MM_CASE(5, call) default : call(6);
#endif
static void micro_16_any(const float *a, const float *b0, const float *b1, int kc, int R, float *out) {
#define CALL_M16(R) micro_16(a, b0, b1, kc, R, out)
    switch (R) { MM_ROWS(CALL_M16) }
#undef CALL_M16
}
static void micro_8_any(const float *a, const float *b0, int kc, int R, float *out) {
#define CALL_M8(R) micro_8(a, b0, kc, R, out)
    switch (R) { MM_ROWS(CALL_M8) }
#undef CALL_M8
}

static void mm_panel_task(void *vctx, int task, int tid) {
    const struct mm_ctx *c = vctx;
    int64_t r0 = (int64_t)task * c->rows_per_task;
    int64_t r1 = r0 + c->rows_per_task < c->N ? r0 + c->rows_per_task : c->N;
    float *panel = kn_cpu_thread_scratch(c->cpu, tid); // (KN_MM_MR, KN_MM_KC)
    float out[KN_MM_MR * 2 * KN_MM_TILE]; // row r, token t at out[2 * KN_MM_TILE * r + t]
    const int64_t K = c->K, N = c->N;
    for (int64_t k0 = 0; k0 < K; k0 += KN_MM_KC) {
        int kc = (int)(K - k0 < KN_MM_KC ? K - k0 : KN_MM_KC);
        for (int64_t rg = r0; rg < r1; rg += KN_MM_MR) {
            int R = (int)(r1 - rg < KN_MM_MR ? r1 - rg : KN_MM_MR);
            for (int r = 0; r < R; r++)
                panel_fill_row(c->type, c->w + (size_t)(rg + r) * c->row_bytes, k0, kc, panel + r * KN_MM_KC);
            // the next panel's weights (next rows, or the first rows of the next slice) come from DRAM while
            // the micro-kernels run on this one
            int64_t nrg = rg + KN_MM_MR < r1 ? rg + KN_MM_MR : r0, nk0 = rg + KN_MM_MR < r1 ? k0 : k0 + KN_MM_KC;
            if (nk0 < K)
                kn_prefetch_panel(c->w, c->row_bytes, c->type, nrg, nrg + KN_MM_MR < r1 ? nrg + KN_MM_MR : r1, nk0,
                                  K - nk0 < KN_MM_KC ? K - nk0 : KN_MM_KC);
            const float *a = panel;
            for (int tile = 0; tile < c->n_tiles; tile += 2) {
                const float *b0 = c->xp + ((size_t)tile * K + k0) * KN_MM_TILE;
                int width;
                if (tile + 1 < c->n_tiles) {
                    micro_16_any(a, b0, b0 + (size_t)K * KN_MM_TILE, kc, R, out);
                    width = 2 * KN_MM_TILE;
                } else {
                    micro_8_any(a, b0, kc, R, out);
                    width = KN_MM_TILE;
                }
                int t_base = tile * KN_MM_TILE;
                int nt = c->n_tok - t_base < width ? c->n_tok - t_base : width;
                for (int t = 0; t < nt; t++) {
                    float *yr = c->y + (size_t)(t_base + t) * N + rg;
                    if (k0 == 0)
                        KN_UNROLL
                        for (int r = 0; r < R; r++) yr[r] = out[2 * KN_MM_TILE * r + t];
                    else
                        KN_UNROLL
                        for (int r = 0; r < R; r++) yr[r] += out[2 * KN_MM_TILE * r + t];
                }
            }
        }
    }
}
#endif // KN_SIMD

// ---- entry -------------------------------------------------------------------------------------------

void kn_cpu_matmul(struct kn_backend *be, float *y, const struct kn_tensor *w, const float *x, int n_tok) {
    struct kn_cpu *cpu = (struct kn_cpu *)be;
    int us = kn_cpu_unit_size(w->type);
    if (!us || !w->data || w->n_cols % us != 0 || n_tok < 0) {
        kn_cpu_set_error(cpu, "matmul: unsupported weight (type %d, %lld columns)", w->type, (long long)w->n_cols);
        if (n_tok > 0) memset(y, 0, sizeof(float) * (size_t)n_tok * (size_t)w->n_rows);
        return;
    }
    if (n_tok == 0 || w->n_rows == 0) return;
    struct mm_ctx c;
    memset(&c, 0, sizeof c);
    c.cpu = cpu;
    c.type = w->type;
    c.K = w->n_cols;
    c.N = w->n_rows;
    c.row_bytes = kn_row_bytes(w->type, w->n_cols);
    c.w = w->data;
    c.x = x;
    c.y = y;
    c.n_tok = n_tok;
#ifdef KN_SIMD
    if (!kn_cpu_scalar_forced(cpu)) {
        if (n_tok < KN_MM_PANEL_MIN) {
            if (kn_cpu_int8_act(cpu) && kn_q8_supported(w->type) &&
                kn_cpu_matmul_q8(cpu, y, w, x, n_tok, kn_cpu_rows_per_task(c.N, 4, 512)) == 0)
                return;
            if (type_has_min(w->type)) {
                c.xsum_stride = c.K / 32 + 8;
                float *xs = kn_cpu_shared_scratch(cpu, sizeof(float) * (size_t)n_tok * (size_t)c.xsum_stride);
                if (!xs) goto fail;
                for (int t = 0; t < n_tok; t++) {
                    const float *xt = x + (size_t)t * c.K;
                    float *st = xs + (size_t)t * c.xsum_stride;
                    for (int64_t j = 0; j < c.K / 32; j++) {
                        const float *p = xt + 32 * j;
                        __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)),
                                                 _mm256_add_ps(_mm256_loadu_ps(p + 16), _mm256_loadu_ps(p + 24)));
                        st[j] = hsum8(s);
                    }
                    for (int64_t j = c.K / 32; j < c.xsum_stride; j++) st[j] = 0.0f;
                }
                c.xsum = xs;
            }
            c.rows_per_task = kn_cpu_rows_per_task(c.N, 4, 512);
            int n_tasks = (int)((c.N + c.rows_per_task - 1) / c.rows_per_task);
            kn_cpu_parallel(cpu, n_tasks, mm_dot_task, &c);
            return;
        }
        if (kn_cpu_int8_act(cpu) && kn_cpu_gemm8(cpu, y, w, x, n_tok) == 0) return;
        c.n_tiles = (n_tok + KN_MM_TILE - 1) / KN_MM_TILE;
        float *xp = kn_cpu_shared_scratch(cpu, sizeof(float) * (size_t)c.n_tiles * KN_MM_TILE * (size_t)c.K);
        if (!xp) goto fail;
        if (kn_cpu_thread_scratch_reserve(cpu, sizeof(float) * KN_MM_MR * KN_MM_KC) != 0) goto fail;
        c.xp = xp;
        c.n_pack = (int)((c.K + KN_MM_PACK - 1) / KN_MM_PACK);
        kn_cpu_parallel(cpu, c.n_tiles * c.n_pack, mm_pack_task, &c);
        c.rows_per_task = kn_cpu_rows_per_task(c.N, KN_MM_MR, 96);
        int n_tasks = (int)((c.N + c.rows_per_task - 1) / c.rows_per_task);
        kn_cpu_parallel(cpu, n_tasks, mm_panel_task, &c);
        return;
    }
#endif
    c.rows_per_task = kn_cpu_rows_per_task(c.N, 1, 256);
    kn_cpu_parallel(cpu, (int)((c.N + c.rows_per_task - 1) / c.rows_per_task), mm_scalar_task, &c);
    return;
#ifdef KN_SIMD
fail:
    memset(y, 0, sizeof(float) * (size_t)n_tok * (size_t)w->n_rows);
#endif
}

// y(n, n_cols) = rows ids[] of W, dequantised with the reference dequantiser.
void kn_cpu_get_rows(struct kn_backend *be, float *y, const struct kn_tensor *w, const int32_t *ids, int n) {
    struct kn_cpu *cpu = (struct kn_cpu *)be;
    size_t rb = kn_row_bytes(w->type, w->n_cols);
    for (int i = 0; i < n; i++) {
        float *yr = y + (size_t)i * w->n_cols;
        if (ids[i] < 0 || ids[i] >= w->n_rows || !rb) {
            kn_cpu_set_error(cpu, "get_rows: row %d out of range (0..%lld) or bad type", ids[i],
                             (long long)w->n_rows - 1);
            memset(yr, 0, sizeof(float) * (size_t)w->n_cols);
            continue;
        }
        const uint8_t *src = (const uint8_t *)w->data + (size_t)ids[i] * rb;
        if (kn_dequant_row(w->type, src, yr, w->n_cols) != 0) {
            kn_cpu_set_error(cpu, "get_rows: type %d not supported", w->type);
            memset(yr, 0, sizeof(float) * (size_t)w->n_cols);
        }
    }
}
