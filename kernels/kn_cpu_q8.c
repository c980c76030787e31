// kernels/kn_cpu_q8.c — decode matmuls with int8 activations: x quantised once per call, then AVX2 integer
// dot products.
//
// Activation format (one for every weight type; see struct kn_q8_row): per 32 values d = amax/127,
// q = rint(x/d) in [-127, 127], s = d·Σq, and the exact integer sums of each 16 codes. Per-32 scales for the
// k-quants too (llama.cpp's Q8_K uses one per 256): on Gemma 3 270M the 256-value blocks cost +1.4% perplexity
// in the k-quant layers alone, 32-value blocks cost +0.2% (measured, see the README).
// Kernels: unsigned weight codes (or |w| with the sign moved onto the activation, for the signed legacy
// types) times int8 activations with vpmaddubsw, pairs to int32 with vpmaddwd (Q6_K multiplies its 8-bit
// 16-value scales in that step), then per 32 values one int->float conversion and one FMA by the combined
// scale d_w·(sub-block scale)·d_x. Min terms (Q4_1, Q5_1, Q4_K, Q5_K) use s; Q6_K's offset of 32 the 16-value
// sums. No saturation: |pair| <= 2·128·127 = 32512. Each output is computed by one thread in a fixed order,
// so results do not depend on the thread count.
#include "kernels/kn_cpu_impl.h"

#include <string.h>

#include "kernels/kn_quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KN_SIMD 1
#include <immintrin.h>
#endif

// ---- activation rows (portable) ---------------------------------------------------------------------

static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }

int kn_q8_supported(int type) {
    switch (type) {
    case KN_Q4_0:
    case KN_Q4_1:
    case KN_Q5_0:
    case KN_Q5_1:
    case KN_Q8_0:
    case KN_Q4_K:
    case KN_Q5_K:
    case KN_Q6_K:
        return 1;
    default:
        return 0;
    }
}

size_t kn_q8_row_bytes(int64_t K) {
    size_t nb = (size_t)(K + 31) / 32, ng = (size_t)(K + 15) / 16;
    return al64((size_t)K) + 2 * al64(sizeof(float) * nb) + al64(sizeof(int16_t) * ng);
}

void kn_q8_row_view(void *base, int64_t K, struct kn_q8_row *r) {
    size_t nb = (size_t)(K + 31) / 32;
    uint8_t *p = base;
    r->q = (int8_t *)p;
    p += al64((size_t)K);
    r->d = (float *)(void *)p;
    p += al64(sizeof(float) * nb);
    r->s = (float *)(void *)p;
    p += al64(sizeof(float) * nb);
    r->bsum = (int16_t *)(void *)p;
}

#ifdef KN_SIMD

#define KN_AI __attribute__((always_inline)) static inline

static inline float h2f(kn_half h) { return _cvtsh_ss(h); }

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// ---- activation quantisation (AVX2; restated independently as act_int8_ref in tests/test_kn_cpu.c) -----

static inline __m256 absmax32(const float *x, __m256 m) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int v = 0; v < 4; v++)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * v)));
    return m;
}
static inline float hmax8(__m256 m) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 32 values times id -> 32 codes at q; i[0..3] the codes as int32 (values 0-7, 8-15, 16-23, 24-31).
KN_AI void quant32(const float *x, float id, int8_t *q, __m256i *i) {
    const __m256 vid = _mm256_set1_ps(id);
    for (int v = 0; v < 4; v++)
        i[v] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * v), vid));
    // packs interleave the 128-bit lanes: dwords come out as 0,2,4,6,1,3,5,7 groups of four codes
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(void *)q, p);
}

void kn_q8_quantize_row(const float *x, int64_t K, const struct kn_q8_row *r) {
    for (int64_t j = 0; j < K / 32; j++) {
        float amax = hmax8(absmax32(x + 32 * j, _mm256_setzero_ps()));
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m256i iv[4];
        quant32(x + 32 * j, id, r->q + 32 * j, iv);
        float d = amax / 127.0f;
        r->d[j] = d;
        int s0 = hsum8i(_mm256_add_epi32(iv[0], iv[1])), s1 = hsum8i(_mm256_add_epi32(iv[2], iv[3]));
        r->bsum[2 * j] = (int16_t)s0;
        r->bsum[2 * j + 1] = (int16_t)s1;
        r->s[j] = d * (float)(s0 + s1);
    }
}

// ---- kernels: rows [r0, r1), tokens t0 .. t0+T-1 (T = 1..4; type and T are constants after inlining) ----

struct q8_ctx {
    int type;
    int64_t K, N;
    size_t row_bytes;
    const uint8_t *w;
    float *y; // (n_tok, N)
    int n_tok;
    int rows_per_task;
    struct kn_q8_row act[KN_Q8_MAX_TOK]; // per token
};

// Codes of 32 legacy values: 16 bytes of nibbles -> low nibbles are values 0..15, high nibbles 16..31.
KN_AI __m256i nib32(const uint8_t *qs) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}
// Bit i of qh (4 bytes) -> byte i = 0x10 or 0.
KN_AI __m256i hibit32(const uint8_t *qhp) {
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
                                         2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), sel), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

// The activation rows of tokens t0 .. t0+T-1, as arrays the kernels index by t.
struct q8_toks {
    const int8_t *q[4];
    const float *d[4], *s[4];
    const int16_t *b[4];
};
KN_AI void q8_toks(const struct q8_ctx *c, int t0, int T, struct q8_toks *tk) {
    for (int t = 0; t < T; t++) {
        tk->q[t] = c->act[t0 + t].q;
        tk->d[t] = c->act[t0 + t].d;
        tk->s[t] = c->act[t0 + t].s;
        tk->b[t] = c->act[t0 + t].bsum;
    }
}

// Legacy types, one block of 32 per step. Signed types (Q4_0, Q5_0, Q8_0): |w| · (x with w's sign).
// Unsigned (Q4_1, Q5_1): w · x plus the min term m·s_x, kept in a scalar per token.
KN_AI void q8_legacy(const struct q8_ctx *c, int64_t r0, int64_t r1, int t0, const int type, const int T) {
    const int64_t nb = c->K / 32;
    const size_t bb = kn_type_block_bytes(type);
    const int has_min = type == KN_Q4_1 || type == KN_Q5_1;
    const int NA = T == 1 ? 2 : 1; // T == 1: two accumulator chains (the FMA latency per block)
    const __m256i ones = _mm256_set1_epi16(1);
    struct q8_toks tk;
    q8_toks(c, t0, T, &tk);
    const int8_t *const *aq = tk.q;
    const float *const *ad = tk.d, *const *as = tk.s;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * c->row_bytes;
        __m256 acc[2][4];
        float accm[4] = {0, 0, 0, 0};
        KN_UNROLL
        for (int a = 0; a < NA; a++) {
            KN_UNROLL
            for (int t = 0; t < T; t++)
                acc[a][t] = _mm256_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
            const uint8_t *p = row + (size_t)i * bb;
            if ((i & 1) == 0) kn_prefetch_ahead(p, 2 * bb);
            __m256i w;
            float dw, mw = 0.0f;
            switch (type) {
            case KN_Q4_0: {
                const struct kn_block_q4_0 *b = (const void *)p;
                dw = h2f(b->d);
                w = _mm256_sub_epi8(nib32(b->qs), _mm256_set1_epi8(8));
            } break;
            case KN_Q5_0: {
                const struct kn_block_q5_0 *b = (const void *)p;
                dw = h2f(b->d);
                w = _mm256_sub_epi8(_mm256_or_si256(nib32(b->qs), hibit32(b->qh)), _mm256_set1_epi8(16));
            } break;
            case KN_Q4_1: {
                const struct kn_block_q4_1 *b = (const void *)p;
                dw = h2f(b->d);
                mw = h2f(b->m);
                w = nib32(b->qs);
            } break;
            case KN_Q5_1: {
                const struct kn_block_q5_1 *b = (const void *)p;
                dw = h2f(b->d);
                mw = h2f(b->m);
                w = _mm256_or_si256(nib32(b->qs), hibit32(b->qh));
            } break;
            default: {
                const struct kn_block_q8_0 *b = (const void *)p;
                dw = h2f(b->d);
                w = _mm256_loadu_si256((const __m256i *)(const void *)b->qs);
            } break;
            }
            const __m256i uw = has_min ? w : _mm256_sign_epi8(w, w);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(aq[t] + 32 * i));
                if (!has_min) a = _mm256_sign_epi8(a, w);
                __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(uw, a), ones);
                __m256 *ac = &acc[NA == 2 ? (int)(i & 1) : 0][t];
                *ac = _mm256_fmadd_ps(_mm256_set1_ps(dw * ad[t][i]), _mm256_cvtepi32_ps(s), *ac);
                if (has_min) accm[t] += mw * as[t][i];
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++) {
            __m256 s = NA == 2 ? _mm256_add_ps(acc[0][t], acc[1][t]) : acc[0][t];
            c->y[(size_t)(t0 + t) * c->N + r] = hsum8(s) + accm[t];
        }
    }
}

// Q4_K / Q5_K: per 64-value chunk, low nibbles are sub-block 2c, high nibbles 2c+1 (Q5_K: plus bit 2c / 2c+1
// of qh as bit 4). Per sub-block j: Σ q·x in int32, times d·sc_j·d_x[j] in float; the mins through
// dmin·m_j·s_x[j].
KN_AI void q8_k45(const struct q8_ctx *c, int64_t r0, int64_t r1, int t0, const int type, const int T) {
    const int64_t nsb = c->K / 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
    struct q8_toks tk;
    q8_toks(c, t0, T, &tk);
    const int8_t *const *aq = tk.q;
    const float *const *ad = tk.d, *const *as = tk.s;
    _Alignas(32) float cs[4][8];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->w + (size_t)r * c->row_bytes;
        __m256 acc0[4], acc1[4], accm[4];
        KN_UNROLL
        for (int t = 0; t < T; t++)
            acc0[t] = acc1[t] = accm[t] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nsb; i++) {
            const uint8_t *qs, *qhp = NULL;
            const void *blk; // both types start with d, dmin, scales[12]
            if (type == KN_Q4_K) {
                const struct kn_block_q4_k *b = (const struct kn_block_q4_k *)(const void *)row + i;
                kn_prefetch_ahead(b, sizeof *b);
                qs = b->qs;
                blk = b;
            } else {
                const struct kn_block_q5_k *b = (const struct kn_block_q5_k *)(const void *)row + i;
                kn_prefetch_ahead(b, sizeof *b);
                qs = b->qs;
                qhp = b->qh;
                blk = b;
            }
            __m256 vsc, vmn; // d·sc_j, dmin·m_j
            kn_q4k_scales8(blk, &vsc, &vmn);
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                _mm256_store_ps(cs[t], _mm256_mul_ps(vsc, _mm256_loadu_ps(ad[t] + 8 * i)));
                accm[t] = _mm256_fmadd_ps(vmn, _mm256_loadu_ps(as[t] + 8 * i), accm[t]);
            }
            __m256i qh = type == KN_Q5_K ? _mm256_loadu_si256((const __m256i *)(const void *)qhp)
                                         : _mm256_setzero_si256();
            KN_UNROLL
            for (int ch = 0; ch < 4; ch++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * ch));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (type == KN_Q5_K) {
                    // bit 2ch of each qh byte to bit 4 (lo), bit 2ch+1 to bit 4 (hi)
                    __m256i h0, h1;
                    switch (ch) {
                    case 0:
                        h0 = _mm256_slli_epi16(qh, 4);
                        h1 = _mm256_slli_epi16(qh, 3);
                        break;
                    case 1:
                        h0 = _mm256_slli_epi16(qh, 2);
                        h1 = _mm256_slli_epi16(qh, 1);
                        break;
                    case 2:
                        h0 = qh;
                        h1 = _mm256_srli_epi16(qh, 1);
                        break;
                    default:
                        h0 = _mm256_srli_epi16(qh, 2);
                        h1 = _mm256_srli_epi16(qh, 3);
                        break;
                    }
                    lo = _mm256_or_si256(lo, _mm256_and_si256(h0, b4));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(h1, b4));
                }
                KN_UNROLL
                for (int t = 0; t < T; t++) {
                    const int8_t *a = aq[t] + 256 * i + 64 * ch;
                    __m256i p0 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(const void *)a)), ones);
                    __m256i p1 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(const void *)(a + 32))),
                        ones);
                    acc0[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_broadcast_ss(&cs[t][2 * ch]), acc0[t]);
                    acc1[t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_broadcast_ss(&cs[t][2 * ch + 1]), acc1[t]);
                }
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++)
            c->y[(size_t)(t0 + t) * c->N + r] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) - hsum8(accm[t]);
    }
}

// Q6_K: per 128-value half, codes 0..63 (offset 32) for values l, l+32, l+64, l+96 from ql[l], ql[l+32] (low
// / high nibble) and qh[l] (2-bit fields); one signed 8-bit scale per 16 values, multiplied in by vpmaddwd.
// Per 32 values j: that int32 sum times d·d_x[j]; the offset: 32·d·Σ_j d_x[j]·(Σ_g∈j sc_g·(16-value code
// sum g)), subtracted at the end.
KN_AI void q8_k6(const struct q8_ctx *c, int64_t r0, int64_t r1, int t0, const int T) {
    const int64_t nsb = c->K / 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    struct q8_toks tk;
    q8_toks(c, t0, T, &tk);
    const int8_t *const *aq = tk.q;
    const float *const *ad = tk.d;
    const int16_t *const *ab = tk.b;
    _Alignas(32) float cs[4][8];
    for (int64_t r = r0; r < r1; r++) {
        const struct kn_block_q6_k *row =
            (const struct kn_block_q6_k *)(const void *)(c->w + (size_t)r * c->row_bytes);
        __m256 acc0[4], acc1[4], acco[4];
        KN_UNROLL
        for (int t = 0; t < T; t++)
            acc0[t] = acc1[t] = acco[t] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nsb; i++) {
            const struct kn_block_q6_k *b = row + i;
            kn_prefetch_ahead(b, sizeof *b);
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)b->scales);
            __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
            const __m256 dw = _mm256_set1_ps(h2f(b->d));
            KN_UNROLL
            for (int t = 0; t < T; t++) {
                __m256 dv = _mm256_mul_ps(dw, _mm256_loadu_ps(ad[t] + 8 * i));
                _mm256_store_ps(cs[t], dv);
                // lane j: sc_2j·bsum_2j + sc_2j+1·bsum_2j+1, the offset sum of 32-value block j
                __m256i bs = _mm256_loadu_si256((const __m256i *)(const void *)(ab[t] + 16 * i));
                __m256i o = _mm256_madd_epi16(sc16, bs);
                acco[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(o), _mm256_mul_ps(dv, _mm256_set1_ps(32.0f)), acco[t]);
            }
            KN_UNROLL
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)(b->ql + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(b->ql + 64 * h + 32));
                __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)(b->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_and_si256(hb, m30));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
                // this half's 8 scales as words in both lanes; chunk k: low lane sc[2k], high lane sc[2k+1]
                __m256i sh = h ? _mm256_permute4x64_epi64(sc16, 0xEE) : _mm256_permute4x64_epi64(sc16, 0x44);
                KN_UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256i s = _mm256_shuffle_epi8(
                        sh, _mm256_set_m128i(_mm_set1_epi16((short)(((4 * k + 3) << 8) | (4 * k + 2))),
                                             _mm_set1_epi16((short)(((4 * k + 1) << 8) | (4 * k)))));
                    KN_UNROLL
                    for (int t = 0; t < T; t++) {
                        const int8_t *a = aq[t] + 256 * i + 128 * h + 32 * k;
                        __m256i p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(const void *)a)),
                            s);
                        __m256 *ac = k & 1 ? &acc1[t] : &acc0[t];
                        *ac = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&cs[t][4 * h + k]), *ac);
                    }
                }
            }
        }
        KN_UNROLL
        for (int t = 0; t < T; t++)
            c->y[(size_t)(t0 + t) * c->N + r] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) - hsum8(acco[t]);
    }
}

#define Q8_T(call_T)                                                                                         \
    switch (nt) {                                                                                            \
    case 1:                                                                                                  \
        call_T(1);                                                                                           \
        break;                                                                                               \
    case 2:                                                                                                  \
        call_T(2);                                                                                           \
        break;                                                                                               \
    case 3:                                                                                                  \
        call_T(3);                                                                                           \
        break;                                                                                               \
    default:                                                                                                 \
        call_T(4);                                                                                           \
        break;                                                                                               \
    }

static void q8_task(void *vctx, int task, int tid) {
    (void)tid;
    const struct q8_ctx *c = vctx;
    int64_t r0 = (int64_t)task * c->rows_per_task;
    int64_t r1 = r0 + c->rows_per_task < c->N ? r0 + c->rows_per_task : c->N;
    for (int t0 = 0; t0 < c->n_tok; t0 += 4) {
        int nt = c->n_tok - t0 < 4 ? c->n_tok - t0 : 4;
        switch (c->type) {
#define C_L(TY, T) q8_legacy(c, r0, r1, t0, TY, T)
#define C_Q40(T) C_L(KN_Q4_0, T)
#define C_Q41(T) C_L(KN_Q4_1, T)
#define C_Q50(T) C_L(KN_Q5_0, T)
#define C_Q51(T) C_L(KN_Q5_1, T)
#define C_Q80(T) C_L(KN_Q8_0, T)
#define C_Q4K(T) q8_k45(c, r0, r1, t0, KN_Q4_K, T)
#define C_Q5K(T) q8_k45(c, r0, r1, t0, KN_Q5_K, T)
#define C_Q6K(T) q8_k6(c, r0, r1, t0, T)
        case KN_Q4_0:
            Q8_T(C_Q40) break;
        case KN_Q4_1:
            Q8_T(C_Q41) break;
        case KN_Q5_0:
            Q8_T(C_Q50) break;
        case KN_Q5_1:
            Q8_T(C_Q51) break;
        case KN_Q8_0:
            Q8_T(C_Q80) break;
        case KN_Q4_K:
            Q8_T(C_Q4K) break;
        case KN_Q5_K:
            Q8_T(C_Q5K) break;
        default:
            Q8_T(C_Q6K) break;
        }
    }
}

#endif // KN_SIMD

// ---- entry ---------------------------------------------------------------------------------------------

int kn_cpu_matmul_q8(struct kn_cpu *cpu, float *y, const struct kn_tensor *w, const float *x, int n_tok,
                     int rows_per_task) {
#ifdef KN_SIMD
    if (!kn_q8_supported(w->type) || n_tok < 1 || n_tok > KN_Q8_MAX_TOK) return -1;
    const int64_t K = w->n_cols;
    size_t stride = kn_q8_row_bytes(K);
    uint8_t *buf = kn_cpu_shared_scratch(cpu, stride * (size_t)n_tok);
    if (!buf) {
        memset(y, 0, sizeof(float) * (size_t)n_tok * (size_t)w->n_rows);
        return 0;
    }
    struct q8_ctx c;
    memset(&c, 0, sizeof c);
    c.type = w->type;
    c.K = K;
    c.N = w->n_rows;
    c.row_bytes = kn_row_bytes(w->type, K);
    c.w = w->data;
    c.y = y;
    c.n_tok = n_tok;
    c.rows_per_task = rows_per_task;
    for (int t = 0; t < n_tok; t++) {
        kn_q8_row_view(buf + (size_t)t * stride, K, &c.act[t]);
        kn_q8_quantize_row(x + (size_t)t * K, K, &c.act[t]);
    }
    kn_cpu_parallel(cpu, (int)((c.N + rows_per_task - 1) / rows_per_task), q8_task, &c);
    return 0;
#else
    (void)cpu;
    (void)y;
    (void)w;
    (void)x;
    (void)n_tok;
    (void)rows_per_task;
    return -1;
#endif
}
