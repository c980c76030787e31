// kernels/kn_cpu_attn.c — CPU attention over one layer's KV cache: fp16 slots plus KIVI-packed groups, with
// dequantisation fused into the dot products (keys: q·k_t = Σ_d (q_d·s_d)·code(d,t) + Σ_d q_d·z_d; values:
// Σ_t p_t·(code·s + z) = Σ (p_t·s)·code + Σ p_t·z), an exact max-subtracted softmax, optional probabilities.
//
// Work items are (KV head, query, subset of that KV head's query heads); the heads of an item share the
// code expansion of every packed group. Each (query head, query) row is computed with the same operation
// order whatever the item split or thread count, so results are deterministic.
#include "kernels/kn_cpu_impl.h"

#include <math.h>
#include <string.h>

#include "kvcache/kv_quant_math.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KN_SIMD 1
#include <immintrin.h>
#if defined(__AVX512F__) && !defined(KN_NO_AVX512)
#define AT_AVX512 1 // fp-slot logits and value passes in 512-bit vectors (head dims a multiple of 16)
#endif
#endif

#ifdef KN_SIMD
static inline float h2f(kn_half h) { return _cvtsh_ss(h); }
#else
static inline float h2f(kn_half h) { return kn_half_to_float(h); }
#endif

struct at_ctx {
    struct kn_cpu *cpu;
    const struct kn_attn_args *a;
    const struct kv_layer_view *kv;
    struct kv_qfmt f;
    int packed;       // the view has a packed region
    int D, grp, hsub, n_sub;
    int slots_pad;    // per-head logit row length (max slots, rounded up to 8)
    int scalar;
};

static int visible(int32_t pos, int64_t qp, int window) {
    return pos <= qp && (window <= 0 || (int64_t)pos > qp - window);
}

static float dot_h(const kn_half *k, const float *q, int D, int simd) {
    int d = 0;
    float s = 0.0f;
#ifdef KN_SIMD
    if (simd && D >= 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (; d + 16 <= D; d += 16) {
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d))), _mm256_loadu_ps(q + d), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d + 8))),
                                 _mm256_loadu_ps(q + d + 8), a1);
        }
        for (; d + 8 <= D; d += 8)
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d))), _mm256_loadu_ps(q + d), a0);
        a0 = _mm256_add_ps(a0, a1);
        __m128 v = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
        v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        v = _mm_add_ss(v, _mm_movehdup_ps(v));
        s = _mm_cvtss_f32(v);
    }
#else
    (void)simd;
#endif
    for (; d < D; d++) s += h2f(k[d]) * q[d];
    return s;
}

// o(D) += p * v(D) (fp16)
static void axpy_h(float *o, float p, const kn_half *v, int D, int simd) {
    int d = 0;
#ifdef KN_SIMD
    if (simd) {
        __m256 vp = _mm256_set1_ps(p);
        for (; d + 8 <= D; d += 8)
            _mm256_storeu_ps(o + d, _mm256_fmadd_ps(vp, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + d))),
                                                    _mm256_loadu_ps(o + d)));
    }
#else
    (void)simd;
#endif
    for (; d < D; d++) o[d] += p * h2f(v[d]);
}

#ifdef KN_SIMD
// 8 codes of B bits (B = 2 or 4) starting at code index 8*v inside the word-aligned stream w.
static inline __m256 codes8(const uint32_t *w, int v, int B) {
    if (B == 4) {
        const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        __m256i x = _mm256_srlv_epi32(_mm256_set1_epi32((int)w[v]), sh);
        return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(15)));
    }
    const __m256i sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    __m256i x = _mm256_srlv_epi32(_mm256_set1_epi32((int)(w[v >> 1] >> ((v & 1) * 16))), sh);
    return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(3)));
}
#endif

#ifdef KN_SIMD
// lg(nh, 8·NV) = qs(nh, D) · codes(D, 8·NV) for a word-aligned channel-major code stream of B-bit codes. Heads go
// by fours (each expanded code vector feeds four heads; two vectors of 8 tokens at a time), then by pairs; every
// logit is the same chain of FMAs over d either way.
__attribute__((always_inline)) static inline void key_dots_simd(const uint32_t *kc, const float *qs, int nh, int D,
                                                                float *lg, const int NV, const int B) {
    const int wpc = NV * 8 * B / 32; // words per channel
    int h0 = 0;
    for (; h0 + 4 <= nh; h0 += 4) {
        const float *q0 = qs + (size_t)h0 * D;
        for (int v0 = 0; v0 < NV; v0 += 2) {
            const int two = v0 + 1 < NV;
            __m256 acc[4][2];
            KN_UNROLL
            for (int h = 0; h < 4; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
            for (int d = 0; d < D; d++) {
                const uint32_t *w = kc + (size_t)d * wpc;
                __m256 c0 = codes8(w, v0, B), c1 = two ? codes8(w, v0 + 1, B) : c0;
                KN_UNROLL
                for (int h = 0; h < 4; h++) {
                    __m256 a = _mm256_broadcast_ss(q0 + (size_t)h * D + d);
                    acc[h][0] = _mm256_fmadd_ps(a, c0, acc[h][0]);
                    if (two) acc[h][1] = _mm256_fmadd_ps(a, c1, acc[h][1]);
                }
            }
            KN_UNROLL
            for (int h = 0; h < 4; h++) {
                _mm256_storeu_ps(lg + (size_t)(h0 + h) * NV * 8 + 8 * v0, acc[h][0]);
                if (two) _mm256_storeu_ps(lg + (size_t)(h0 + h) * NV * 8 + 8 * v0 + 8, acc[h][1]);
            }
        }
    }
    for (; h0 < nh; h0 += 2) {
        const int two = h0 + 1 < nh;
        __m256 acc0[4], acc1[4];
        KN_UNROLL
        for (int v = 0; v < NV; v++) acc0[v] = acc1[v] = _mm256_setzero_ps();
        const float *q0 = qs + (size_t)h0 * D, *q1 = q0 + (two ? D : 0);
        for (int d = 0; d < D; d++) {
            const uint32_t *w = kc + (size_t)d * wpc;
            __m256 a0 = _mm256_broadcast_ss(q0 + d), a1 = _mm256_broadcast_ss(q1 + d);
            KN_UNROLL
            for (int v = 0; v < NV; v++) {
                __m256 cv = codes8(w, v, B);
                acc0[v] = _mm256_fmadd_ps(a0, cv, acc0[v]);
                acc1[v] = _mm256_fmadd_ps(a1, cv, acc1[v]);
            }
        }
        KN_UNROLL
        for (int v = 0; v < NV; v++) {
            _mm256_storeu_ps(lg + (size_t)h0 * NV * 8 + 8 * v, acc0[v]);
            if (two) _mm256_storeu_ps(lg + (size_t)(h0 + 1) * NV * 8 + 8 * v, acc1[v]);
        }
    }
}
#endif

// Key logits (without scale) of the G tokens of group g for nh heads: lg[h*G + t] = Σ_d qs[h*D+d]·code(d,t).
static void group_key_dots(const struct at_ctx *c, const void *g, const float *qs, int nh, float *lg) {
    const struct kv_qfmt f = c->f;
    const int D = f.D, G = f.G, B = f.B;
    const uint32_t *kc = kvq_kcode((void *)(uintptr_t)g, f);
#ifdef KN_SIMD
    if (!c->scalar && (B == 2 || B == 4) && G % 8 == 0 && ((size_t)G * B) % 32 == 0) {
#define KD(NV, BB) key_dots_simd(kc, qs, nh, D, lg, NV, BB)
        switch (G / 8 * 8 + B) {
        case 8 + 2: KD(1, 2); break;
        case 8 + 4: KD(1, 4); break;
        case 16 + 2: KD(2, 2); break;
        case 16 + 4: KD(2, 4); break;
        case 24 + 4: KD(3, 4); break;
        case 32 + 2: KD(4, 2); break;
        default: KD(4, 4); break; // 32 + 4 (24 + 2 is not word-aligned and takes the portable path)
        }
#undef KD
        return;
    }
#endif
    for (int h = 0; h < nh; h++)
        for (int t = 0; t < G; t++) lg[(size_t)h * G + t] = 0.0f;
    for (int d = 0; d < D; d++)
        for (int t = 0; t < G; t++) {
            float cd = (float)kv_code_get(kc, (size_t)d * G + t, B);
            for (int h = 0; h < nh; h++) lg[(size_t)h * G + t] += qs[(size_t)h * D + d] * cd;
        }
}

// o[h](D) += Σ over channels of (p_h·vscale)·code(t, d); zacc[h][vg] += p_h·vzero, for group token t.
static void group_value_acc(const struct at_ctx *c, const void *g, int t, const float *p, int nh, float *o,
                            float *zacc) {
    const struct kv_qfmt f = c->f;
    const int D = f.D, B = f.B, VG = f.VG, nvg = D / VG;
    void *gm = (void *)(uintptr_t)g;
    const uint32_t *vc = kvq_vcode(gm, f);
    const kn_half *vs = kvq_vscale(gm, f) + (size_t)t * nvg, *vz = kvq_vzero(gm, f) + (size_t)t * nvg;
    for (int q = 0; q < nvg; q++) {
        float z = h2f(vz[q]);
        for (int h = 0; h < nh; h++) zacc[(size_t)h * nvg + q] += p[h] * z;
    }
#ifdef KN_SIMD
    if (!c->scalar && (B == 2 || B == 4) && VG % 8 == 0 && ((size_t)D * B) % 32 == 0) {
        const uint32_t *w = vc + (size_t)t * D * B / 32;
        for (int d0 = 0; d0 < D; d0 += 8) {
            __m256 cv = codes8(w, d0 / 8, B);
            float s = h2f(vs[d0 / VG]);
            for (int h = 0; h < nh; h++) {
                float *oh = o + (size_t)h * D + d0;
                _mm256_storeu_ps(oh, _mm256_fmadd_ps(_mm256_set1_ps(p[h] * s), cv, _mm256_loadu_ps(oh)));
            }
        }
        return;
    }
#endif
    for (int d = 0; d < D; d++) {
        float cd = (float)kv_code_get(vc, (size_t)t * D + d, B);
        float s = h2f(vs[d / VG]);
        for (int h = 0; h < nh; h++) o[(size_t)h * D + d] += p[h] * s * cd;
    }
}

static void softmax_row(float *l, int n, int simd) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = l[i] > m ? l[i] : m;
    if (m == -INFINITY) {
        memset(l, 0, sizeof(float) * (size_t)n);
        return;
    }
    float sum = 0.0f;
    int i = 0;
#ifdef KN_SIMD
    if (simd) {
        __m256 vm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) {
            __m256 e = kn_exp256(_mm256_sub_ps(_mm256_loadu_ps(l + i), vm));
            _mm256_storeu_ps(l + i, e);
            vs = _mm256_add_ps(vs, e);
        }
        float t[8];
        _mm256_storeu_ps(t, vs);
        for (int k = 0; k < 8; k++) sum += t[k];
    }
#else
    (void)simd;
#endif
    for (; i < n; i++) {
        l[i] = expf(l[i] - m);
        sum += l[i];
    }
    float inv = 1.0f / sum;
    for (i = 0; i < n; i++) l[i] *= inv;
}

#ifdef KN_SIMD
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Lane sums of 8 vectors as one vector: out[j] = Σ lanes of a[j].
static inline __m256 hsum8x8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// qs(nh, D) = q * kscale, zq(nh) = q · kzero for one packed group (D % 8 == 0).
static void group_q_prep_simd(const kn_half *ks, const kn_half *kz, const float *q, int nh, int D, float *qs,
                              float *zq) {
    for (int h = 0; h < nh; h++) {
        const float *qh = q + (size_t)h * D;
        __m256 z = _mm256_setzero_ps();
        for (int d = 0; d < D; d += 8) {
            __m256 qv = _mm256_loadu_ps(qh + d);
            _mm256_storeu_ps(qs + (size_t)h * D + d,
                             _mm256_mul_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ks + d)))));
            z = _mm256_fmadd_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kz + d))), z);
        }
        zq[h] = hsum8(z);
    }
}

// Unscaled logits of fp slots [0, n_fp) for nh heads into l[h*stride + s] (D % 8 == 0), 8 slots at a time.
// Each block of 8 key rows is converted to fp32 once (kt, in L1) and used by every head of the item.
#define AT_KT_MAX_D 256
static void fp_logits_simd(const struct kv_head_view *hv, const float *q, int nh, int D, float *l, int stride,
                           float scale, int n_fp) {
    _Alignas(64) float kt[8 * AT_KT_MAX_D];
    const int tile = D <= AT_KT_MAX_D;
    int s = 0;
    for (; s + 8 <= n_fp; s += 8) {
        const kn_half *k = kvq_fp_k(hv->fp_blocks[s / KV_FP_BLOCK], D, s % KV_FP_BLOCK); // 8 rows of D
        if (tile)
            for (int e = 0; e < 8 * D; e += 8)
                _mm256_store_ps(kt + e, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + e))));
        for (int h = 0; h < nh; h++) {
            const float *qh = q + (size_t)h * D;
            __m256 acc[8];
            KN_UNROLL
            for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
#ifdef AT_AVX512
            if (tile && D % 16 == 0) { // 16 lanes per row, folded to 8 before the horizontal sums
                __m512 acc16[8];
                KN_UNROLL
                for (int j = 0; j < 8; j++) acc16[j] = _mm512_setzero_ps();
                for (int d = 0; d < D; d += 16) {
                    __m512 qv = _mm512_loadu_ps(qh + d);
                    KN_UNROLL
                    for (int j = 0; j < 8; j++)
                        acc16[j] = _mm512_fmadd_ps(_mm512_load_ps(kt + (size_t)j * D + d), qv, acc16[j]);
                }
                KN_UNROLL
                for (int j = 0; j < 8; j++)
                    acc[j] = _mm256_add_ps(_mm512_castps512_ps256(acc16[j]),
                                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc16[j]), 1)));
            } else
#endif
            if (tile) {
                for (int d = 0; d < D; d += 8) {
                    __m256 qv = _mm256_loadu_ps(qh + d);
                    KN_UNROLL
                    for (int j = 0; j < 8; j++)
                        acc[j] = _mm256_fmadd_ps(_mm256_load_ps(kt + (size_t)j * D + d), qv, acc[j]);
                }
            } else {
                for (int d = 0; d < D; d += 8) {
                    __m256 qv = _mm256_loadu_ps(qh + d);
                    KN_UNROLL
                    for (int j = 0; j < 8; j++)
                        acc[j] = _mm256_fmadd_ps(
                            _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + (size_t)j * D + d))), qv, acc[j]);
                }
            }
            _mm256_storeu_ps(l + (size_t)h * stride + s, _mm256_mul_ps(hsum8x8(acc), _mm256_set1_ps(scale)));
        }
    }
    for (; s < n_fp; s++) {
        const kn_half *k = kvq_fp_k(hv->fp_blocks[s / KV_FP_BLOCK], D, s % KV_FP_BLOCK);
        for (int h = 0; h < nh; h++) {
            const float *qh = q + (size_t)h * D;
            __m256 acc = _mm256_setzero_ps();
            for (int d = 0; d < D; d += 8)
                acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d))),
                                      _mm256_loadu_ps(qh + d), acc);
            l[(size_t)h * stride + s] = scale * hsum8(acc);
        }
    }
}

// Per packed slot and value group the weight p·vscale of each head, ps[h][(g·G + t)·nvg + vg] (PS row stride
// `pstride`), and the zero terms za[h][vg] = Σ p·vzero: computed once per item instead of once per chunk pass.
// A group's scales and zeros are contiguous (G·nvg, a multiple of 8): with nvg dividing 8 or a multiple of it,
// whole vectors of (slot, vg) pairs are weighted at once and the zero terms kept in per-lane sums, folded at
// the end (lane l of a vector holds vg = l mod nvg, or (vector index mod nvg/8)·8 + l). Fixed order for a shape.
static void values_prep(const struct at_ctx *c, const struct kv_head_view *hv, int n_q, const float *L, int nh,
                        float *ps, size_t pstride, float *za) {
    const int G = c->f.G, nvg = c->D / c->f.VG, n = G * nvg;
    const int nacc = nvg % 8 == 0 ? nvg / 8 : 1; // per-lane sums per head
    const int lanes_ok = (nvg == 1 || nvg == 2 || nvg == 4 || nvg % 8 == 0) && n <= 1024 && nacc <= 32;
    if (!lanes_ok) {
        for (int h = 0; h < nh; h++)
            for (int q = 0; q < nvg; q++) {
                float z = 0.0f;
                for (int g = 0; g < n_q; g++) {
                    void *gb = hv->q_blocks[g];
                    const kn_half *vs = kvq_vscale(gb, c->f), *vz = kvq_vzero(gb, c->f);
                    for (int t = 0; t < G; t++) {
                        float p = L[(size_t)h * c->slots_pad + g * G + t];
                        ps[(size_t)h * pstride + (size_t)(g * G + t) * nvg + q] = p * h2f(vs[t * nvg + q]);
                        z += p * h2f(vz[t * nvg + q]);
                    }
                }
                za[(size_t)h * nvg + q] = z;
            }
        return;
    }
    __m256 zacc[32];
    for (int h = 0; h < nh; h++) {
        for (int k = 0; k < nacc; k++) zacc[k] = _mm256_setzero_ps();
        __m256 z0 = _mm256_setzero_ps(); // the only sum when nacc == 1 (kept in a register)
        const float *lh = L + (size_t)h * c->slots_pad;
        float *oh = ps + (size_t)h * pstride;
        for (int g = 0; g < n_q; g++) {
            void *gb = hv->q_blocks[g];
            const kn_half *vs = kvq_vscale(gb, c->f), *vz = kvq_vzero(gb, c->f);
            const float *pg = lh + g * G;
            float *o = oh + (size_t)g * n;
            for (int i = 0; i < n; i += 8) {
                __m256 pv; // p of the (slot, vg) pairs i .. i+7
                if (nvg == 1) {
                    pv = _mm256_loadu_ps(pg + i);
                } else if (nvg == 2) {
                    __m128 x = _mm_loadu_ps(pg + i / 2);
                    pv = _mm256_set_m128(_mm_unpackhi_ps(x, x), _mm_unpacklo_ps(x, x));
                } else if (nvg == 4) {
                    pv = _mm256_set_m128(_mm_set1_ps(pg[i / 4 + 1]), _mm_set1_ps(pg[i / 4]));
                } else {
                    pv = _mm256_set1_ps(pg[i / nvg]);
                }
                _mm256_storeu_ps(o + i, _mm256_mul_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vs + i)))));
                __m256 zp = _mm256_mul_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vz + i))));
                if (nacc == 1)
                    z0 = _mm256_add_ps(z0, zp);
                else
                    zacc[(i / 8) % nacc] = _mm256_add_ps(zacc[(i / 8) % nacc], zp);
            }
        }
        if (nacc == 1) zacc[0] = z0;
        float lane[8];
        for (int k = 0; k < nacc; k++) {
            _mm256_storeu_ps(lane, zacc[k]);
            if (nvg % 8 == 0) {
                for (int l = 0; l < 8; l++) za[(size_t)h * nvg + k * 8 + l] = lane[l];
            } else {
                for (int q = 0; q < nvg; q++) {
                    float z = 0.0f;
                    for (int l = q; l < 8; l += nvg) z += lane[l];
                    za[(size_t)h * nvg + q] = z;
                }
            }
        }
    }
}

// out_h(d0 .. d0 + 8·NV) = Σ over the packed slots of (p·vscale)·code for NH (1, 2 or 4) heads sharing every
// expanded code vector, with the weights of values_prep (zero terms are its job). NH·NV <= 8.
__attribute__((always_inline)) static inline void values_packed_chunk(const struct at_ctx *c, const struct kv_head_view *hv,
                                                                      int n_q, const float *const *pw, int d0,
                                                                      const int NV, const int NH, float *const *out) {
    const int D = c->D, G = c->f.G, B = c->f.B, nvg = D / c->f.VG, VG = c->f.VG;
    __m256 acc[4][4];
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        KN_UNROLL
        for (int h = 0; h < NH; h++) acc[h][j] = _mm256_setzero_ps();
    }
    for (int g = 0; g < n_q; g++) {
        const uint32_t *vc = kvq_vcode(hv->q_blocks[g], c->f);
        for (int t = 0; t < G; t++) {
            const uint32_t *w = vc + (size_t)t * D * B / 32;
            size_t j0 = (size_t)(g * G + t) * nvg;
            KN_UNROLL
            for (int j = 0; j < NV; j++) {
                int d = d0 + 8 * j;
                __m256 cv = codes8(w, d / 8, B);
                KN_UNROLL
                for (int h = 0; h < NH; h++)
                    acc[h][j] = _mm256_fmadd_ps(_mm256_broadcast_ss(pw[h] + j0 + d / VG), cv, acc[h][j]);
            }
        }
    }
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        KN_UNROLL
        for (int h = 0; h < NH; h++) _mm256_storeu_ps(out[h] + d0 + 8 * j, acc[h][j]);
    }
}

// out_h(d0 .. d0 + 8·NV) (+)= Σ_k pk_h[k]·v_k over the item's live fp slots (vrow[k]: their V rows, pk_h: their
// weights, compacted; see values_simd) for NH heads sharing every converted V row; it continues the packed
// sums in out when `cont`. One head runs two chains (even and odd k). Apart from the packed part so that GCC
// keeps these accumulators in registers.
__attribute__((always_inline)) static inline void values_fp_chunk(const kn_half *const *vrow, int n_live,
                                                                  const float *const *pk, int d0, const int NV,
                                                                  const int NH, int cont, float *const *out) {
    __m256 acc[4][4], acc2[4];
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        acc2[j] = _mm256_setzero_ps();
        KN_UNROLL
        for (int h = 0; h < NH; h++)
            acc[h][j] = cont ? _mm256_loadu_ps(out[h] + d0 + 8 * j) : _mm256_setzero_ps();
    }
    int k = 0;
    if (NH == 1)
        for (; k + 2 <= n_live; k += 2) {
            const kn_half *v0 = vrow[k] + d0, *v1 = vrow[k + 1] + d0;
            __m256 w0 = _mm256_broadcast_ss(pk[0] + k), w1 = _mm256_broadcast_ss(pk[0] + k + 1);
            KN_UNROLL
            for (int j = 0; j < NV; j++) {
                acc[0][j] = _mm256_fmadd_ps(w0, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v0 + 8 * j))), acc[0][j]);
                acc2[j] = _mm256_fmadd_ps(w1, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v1 + 8 * j))), acc2[j]);
            }
        }
    for (; k < n_live; k++) {
        const kn_half *v0 = vrow[k] + d0;
        KN_UNROLL
        for (int j = 0; j < NV; j++) {
            __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v0 + 8 * j)));
            KN_UNROLL
            for (int h = 0; h < NH; h++) acc[h][j] = _mm256_fmadd_ps(_mm256_broadcast_ss(pk[h] + k), v, acc[h][j]);
        }
    }
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        if (NH == 1) {
            _mm256_storeu_ps(out[0] + d0 + 8 * j, _mm256_add_ps(acc[0][j], acc2[j]));
        } else {
            KN_UNROLL
            for (int h = 0; h < NH; h++) _mm256_storeu_ps(out[h] + d0 + 8 * j, acc[h][j]);
        }
    }
}

#ifdef AT_AVX512
// values_fp_chunk in 512-bit vectors: out_h(d0 .. d0 + 16·NV) = Σ_k pk_h[k]·v_k (no packed region).
__attribute__((always_inline)) static inline void values_fp_chunk16(const kn_half *const *vrow, int n_live,
                                                                    const float *const *pk, int d0, const int NV,
                                                                    const int NH, float *const *out) {
    __m512 acc[4][4], acc2[4];
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        acc2[j] = _mm512_setzero_ps();
        KN_UNROLL
        for (int h = 0; h < NH; h++) acc[h][j] = _mm512_setzero_ps();
    }
    int k = 0;
    if (NH == 1)
        for (; k + 2 <= n_live; k += 2) {
            const kn_half *v0 = vrow[k] + d0, *v1 = vrow[k + 1] + d0;
            __m512 w0 = _mm512_set1_ps(pk[0][k]), w1 = _mm512_set1_ps(pk[0][k + 1]);
            KN_UNROLL
            for (int j = 0; j < NV; j++) {
                acc[0][j] = _mm512_fmadd_ps(w0, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v0 + 16 * j))),
                                            acc[0][j]);
                acc2[j] = _mm512_fmadd_ps(w1, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v1 + 16 * j))),
                                          acc2[j]);
            }
        }
    for (; k < n_live; k++) {
        const kn_half *v0 = vrow[k] + d0;
        KN_UNROLL
        for (int j = 0; j < NV; j++) {
            __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v0 + 16 * j)));
            KN_UNROLL
            for (int h = 0; h < NH; h++) acc[h][j] = _mm512_fmadd_ps(_mm512_set1_ps(pk[h][k]), v, acc[h][j]);
        }
    }
    KN_UNROLL
    for (int j = 0; j < NV; j++) {
        if (NH == 1) {
            _mm512_storeu_ps(out[0] + d0 + 16 * j, _mm512_add_ps(acc[0][j], acc2[j]));
        } else {
            KN_UNROLL
            for (int h = 0; h < NH; h++) _mm512_storeu_ps(out[h] + d0 + 16 * j, acc[h][j]);
        }
    }
}
#endif

// out_h(d0 .. d0 + 8·NV) = Σ_slots p_h·v: the packed slots, then the live fp ones, one chain per output vector.
__attribute__((always_inline)) static inline void values_chunk(const struct at_ctx *c, const struct kv_head_view *hv,
                                                               int n_q, const kn_half *const *vrow, int n_live,
                                                               const float *const *pk, const float *const *pw, int d0,
                                                               const int NV, const int NH, float *const *out) {
    if (n_q) values_packed_chunk(c, hv, n_q, pw, d0, NV, NH, out);
    values_fp_chunk(vrow, n_live, pk, d0, NV, NH, n_q > 0, out);
}

// out(nh, D) = Σ_slots p·v over the packed groups and fp slots [0, n_fp) (packed weights pw from values_prep, row
// stride pstride). Needs D % 8 == 0 and, with packed groups, VG % 8 == 0 and B in {2, 4}. First the fp slots
// that some head of the item weighs (p != 0; the others contribute nothing) are listed once: their V rows into
// vrow and, in place in L, their weights (so L's fp part is no longer the probabilities afterwards). Then heads
// by fours (16 channels a pass), pairs (32), one (32), each pass a branch-free loop over the list.
static void values_simd(const struct at_ctx *c, const struct kv_head_view *hv, int n_q, int n_fp, float *L,
                        const float *pw, size_t pstride, int nh, const kn_half **vrow, float *out) {
    const int D = c->D, base = n_q * c->f.G;
    int n_live = 0;
    for (int s = 0; s < n_fp; s++) {
        int any = 0;
        for (int h = 0; h < nh; h++) any |= L[(size_t)h * c->slots_pad + base + s] != 0.0f;
        if (!any) continue;
        for (int h = 0; h < nh; h++) {
            float *lh = L + (size_t)h * c->slots_pad + base;
            lh[n_live] = lh[s];
        }
        vrow[n_live++] = kvq_fp_v(hv->fp_blocks[s / KV_FP_BLOCK], D, s % KV_FP_BLOCK);
    }
    int h = 0;
#ifdef AT_AVX512
    if (!n_q && D % 16 == 0) { // heads by fours (32 channels a pass), pairs (64), one (64)
        for (; h + 4 <= nh; h += 4) {
            const float *pk[4];
            float *o[4];
            for (int k = 0; k < 4; k++) {
                pk[k] = L + (size_t)(h + k) * c->slots_pad;
                o[k] = out + (size_t)(h + k) * D;
            }
            int d0 = 0;
            for (; d0 + 32 <= D; d0 += 32) values_fp_chunk16(vrow, n_live, pk, d0, 2, 4, o);
            for (; d0 < D; d0 += 16) values_fp_chunk16(vrow, n_live, pk, d0, 1, 4, o);
        }
        for (; h < nh; h += 2) {
            int two = h + 1 < nh;
            const float *pk[2] = {L + (size_t)h * c->slots_pad, L + (size_t)(h + two) * c->slots_pad};
            float *o[2] = {out + (size_t)h * D, out + (size_t)(h + two) * D};
            int d0 = 0;
            if (two) {
                for (; d0 + 64 <= D; d0 += 64) values_fp_chunk16(vrow, n_live, pk, d0, 4, 2, o);
                for (; d0 < D; d0 += 16) values_fp_chunk16(vrow, n_live, pk, d0, 1, 2, o);
            } else {
                for (; d0 + 64 <= D; d0 += 64) values_fp_chunk16(vrow, n_live, pk, d0, 4, 1, o);
                for (; d0 < D; d0 += 16) values_fp_chunk16(vrow, n_live, pk, d0, 1, 1, o);
            }
        }
        return;
    }
#endif
    for (; h + 4 <= nh; h += 4) {
        const float *pk[4], *w[4];
        float *o[4];
        for (int k = 0; k < 4; k++) {
            pk[k] = L + (size_t)(h + k) * c->slots_pad + base;
            w[k] = pw + (size_t)(h + k) * pstride;
            o[k] = out + (size_t)(h + k) * D;
        }
        int d0 = 0;
        for (; d0 + 16 <= D; d0 += 16) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 2, 4, o);
        for (; d0 < D; d0 += 8) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 1, 4, o);
    }
    for (; h < nh; h += 2) {
        int two = h + 1 < nh;
        const float *pk[2] = {L + (size_t)h * c->slots_pad + base, L + (size_t)(h + two) * c->slots_pad + base};
        const float *w[2] = {pw + (size_t)h * pstride, pw + (size_t)(h + two) * pstride};
        float *o[2] = {out + (size_t)h * D, out + (size_t)(h + two) * D};
        int d0 = 0;
        if (two) {
            for (; d0 + 32 <= D; d0 += 32) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 4, 2, o);
            for (; d0 < D; d0 += 8) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 1, 2, o);
        } else {
            for (; d0 + 32 <= D; d0 += 32) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 4, 1, o);
            for (; d0 < D; d0 += 8) values_chunk(c, hv, n_q, vrow, n_live, pk, w, d0, 1, 1, o);
        }
    }
}
#endif

static void at_task(void *vctx, int task, int tid) {
    const struct at_ctx *c = vctx;
    const struct kn_attn_args *a = c->a;
    const struct kv_layer_view *kv = c->kv;
    const int D = c->D, G = c->f.G, nvg = c->packed ? D / c->f.VG : 0;
    const int simd = !c->scalar;
    int sb = task % c->n_sub;
    int i = (task / c->n_sub) % a->n_tok;
    int hk = task / c->n_sub / a->n_tok;
    int hq0 = hk * c->grp + sb * c->hsub;
    int nh = c->hsub < c->grp - sb * c->hsub ? c->hsub : c->grp - sb * c->hsub;
    const struct kv_head_view *hv = &kv->heads[hk];
    const int n_q = c->packed ? hv->n_q : 0, n_fp = hv->n_fp;
    const int n_slots = n_q * G + n_fp;
    const int64_t qp = a->q_pos[i];
#ifdef KN_SIMD
    const int fast = simd && D % 8 == 0;
    const int fast_v = fast && (!n_q || ((c->f.B == 2 || c->f.B == 4) && c->f.VG % 8 == 0 && (D * c->f.B) % 32 == 0));
#endif

    // scratch: logits (nh, slots_pad) | out (nh, D) | qs (nh, D) | zacc (nh, nvg) | lg (nh, G) | zq, p (nh) |
    // packed value weights (nh, slots_pad * nvg) | V rows of the live fp slots (slots_pad pointers)
    float *L = kn_cpu_thread_scratch(c->cpu, tid);
    float *O = L + (size_t)nh * c->slots_pad;
    float *QS = O + (size_t)nh * D;
    float *ZA = QS + (size_t)nh * D;
    float *LG = ZA + (size_t)nh * (nvg ? nvg : 1);
    float *ZQ = LG + (size_t)nh * KV_MAX_GROUP;
    float *P = ZQ + nh;
#ifdef KN_SIMD
    float *PS = P + nh; // (nh, slots_pad * nvg) packed value weights (SIMD path)
    // then the V rows of the live fp slots (slots_pad pointers, 8-byte aligned)
    size_t vr_off = (size_t)(PS - L) + (c->packed ? (size_t)nh * c->slots_pad * (size_t)nvg : 0);
    const kn_half **VR = (const kn_half **)(void *)(L + ((vr_off + 1) & ~(size_t)1));
#endif
    const float *q = a->q + ((size_t)i * a->n_head + hq0) * D; // (nh, D) contiguous

    // 1. logits
    for (int g = 0; g < n_q; g++) {
        void *gb = hv->q_blocks[g];
        uint32_t live = *kvq_live(gb);
        const uint16_t *po = kvq_pos_off(gb, c->f);
        int32_t base = *kvq_pos_base(gb);
        uint32_t vis = 0;
        for (int t = 0; t < G; t++)
            if ((live >> t & 1) && visible(base + po[t], qp, kv->window)) vis |= 1u << t;
        if (!vis) {
            for (int h = 0; h < nh; h++)
                for (int t = 0; t < G; t++) L[(size_t)h * c->slots_pad + g * G + t] = -INFINITY;
            continue;
        }
        const kn_half *ks = kvq_kscale(gb, c->f), *kz = kvq_kzero(gb, c->f);
#ifdef KN_SIMD
        if (fast)
            group_q_prep_simd(ks, kz, q, nh, D, QS, ZQ);
        else
#endif
            for (int h = 0; h < nh; h++) {
                float zq = 0.0f;
                for (int d = 0; d < D; d++) {
                    float qd = q[(size_t)h * D + d];
                    QS[(size_t)h * D + d] = qd * h2f(ks[d]);
                    zq += qd * h2f(kz[d]);
                }
                ZQ[h] = zq;
            }
        group_key_dots(c, gb, QS, nh, LG);
#ifdef KN_SIMD
        if (fast && G % 8 == 0) {
            const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            const __m256 ninf = _mm256_set1_ps(-INFINITY), vsc = _mm256_set1_ps(a->scale);
            for (int v = 0; v < G / 8; v++) {
                __m256i m = _mm256_and_si256(_mm256_set1_epi32((int)(vis >> (8 * v))), bit);
                __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, bit));
                for (int h = 0; h < nh; h++) {
                    __m256 x = _mm256_add_ps(_mm256_loadu_ps(LG + (size_t)h * G + 8 * v), _mm256_set1_ps(ZQ[h]));
                    _mm256_storeu_ps(L + (size_t)h * c->slots_pad + g * G + 8 * v,
                                     _mm256_blendv_ps(ninf, _mm256_mul_ps(vsc, x), keep));
                }
            }
        } else
#endif
            for (int h = 0; h < nh; h++)
                for (int t = 0; t < G; t++)
                    L[(size_t)h * c->slots_pad + g * G + t] =
                        (vis >> t & 1) ? a->scale * (LG[(size_t)h * G + t] + ZQ[h]) : -INFINITY;
    }
    // fp slots [n_act, n_fp) are all invisible (in a causal prefill, the later tokens): they get no logits, no
    // softmax and no values, only zero probabilities. n_act is a multiple of 8 (or n_fp).
    int n_act = n_fp;
#ifdef KN_SIMD
    if (fast) { // every slot up to the last visible one, then the mask
        int last = -1;
        for (int s = 0; s < n_fp; s++)
            if (visible(kvq_fp_pos(hv->fp_blocks[s / KV_FP_BLOCK])[s % KV_FP_BLOCK], qp, kv->window)) last = s;
        n_act = (last + 8) & ~7;
        if (n_act > n_fp) n_act = n_fp;
        fp_logits_simd(hv, q, nh, D, L + n_q * G, c->slots_pad, a->scale, n_act);
        for (int s = 0; s < n_act; s++)
            if (!visible(kvq_fp_pos(hv->fp_blocks[s / KV_FP_BLOCK])[s % KV_FP_BLOCK], qp, kv->window))
                for (int h = 0; h < nh; h++) L[(size_t)h * c->slots_pad + n_q * G + s] = -INFINITY;
    } else
#endif
        for (int s = 0; s < n_fp; s++) {
            void *fb = hv->fp_blocks[s / KV_FP_BLOCK];
            int si = s % KV_FP_BLOCK;
            float *l = L + n_q * G + s;
            if (!visible(kvq_fp_pos(fb)[si], qp, kv->window)) {
                for (int h = 0; h < nh; h++) l[(size_t)h * c->slots_pad] = -INFINITY;
                continue;
            }
            const kn_half *k = kvq_fp_k(fb, D, si);
            for (int h = 0; h < nh; h++) l[(size_t)h * c->slots_pad] = a->scale * dot_h(k, q + (size_t)h * D, D, simd);
        }

    // 2. softmax per head (rows with nothing visible become all zeros)
    for (int h = 0; h < nh; h++) {
        float *lh = L + (size_t)h * c->slots_pad;
        softmax_row(lh, n_q * G + n_act, simd);
        if (n_act < n_fp) memset(lh + n_q * G + n_act, 0, sizeof(float) * (size_t)(n_fp - n_act));
    }

    // probabilities out now: the SIMD values path compacts L's fp part
    if (a->probs)
        for (int h = 0; h < nh; h++) {
            float *pr = a->probs + ((size_t)(hq0 + h) * a->n_tok + i) * a->probs_stride;
            memcpy(pr, L + (size_t)h * c->slots_pad, sizeof(float) * (size_t)n_slots);
            if (a->probs_stride > n_slots) memset(pr + n_slots, 0, sizeof(float) * (size_t)(a->probs_stride - n_slots));
        }

    // 3. weighted values
    memset(O, 0, sizeof(float) * (size_t)nh * D);
    if (nvg) memset(ZA, 0, sizeof(float) * (size_t)nh * nvg);
#ifdef KN_SIMD
    if (fast_v) {
        size_t pstride = (size_t)c->slots_pad * (nvg ? nvg : 1);
        if (n_q) values_prep(c, hv, n_q, L, nh, PS, pstride, ZA);
        values_simd(c, hv, n_q, n_act, L, PS, pstride, nh, VR, O);
        goto outputs;
    }
#endif
    for (int g = 0; g < n_q; g++) {
        void *gb = hv->q_blocks[g];
        for (int t = 0; t < G; t++) {
            int any = 0;
            for (int h = 0; h < nh; h++) {
                P[h] = L[(size_t)h * c->slots_pad + g * G + t];
                any |= P[h] != 0.0f;
            }
            if (any) group_value_acc(c, gb, t, P, nh, O, ZA);
        }
    }
    for (int s = 0; s < n_fp; s++) {
        void *fb = hv->fp_blocks[s / KV_FP_BLOCK];
        const kn_half *v = kvq_fp_v(fb, D, s % KV_FP_BLOCK);
        for (int h = 0; h < nh; h++) {
            float p = L[(size_t)h * c->slots_pad + n_q * G + s];
            if (p != 0.0f) axpy_h(O + (size_t)h * D, p, v, D, simd);
        }
    }

    // 4. outputs
#ifdef KN_SIMD
outputs:
#endif
    for (int h = 0; h < nh; h++) {
        float *out = a->out + ((size_t)i * a->n_head + hq0 + h) * D;
        for (int d = 0; d < D; d++) out[d] = O[(size_t)h * D + d] + (nvg ? ZA[(size_t)h * nvg + d / c->f.VG] : 0.0f);
    }
}

void kn_cpu_attention(struct kn_backend *be, const struct kn_attn_args *a) {
    struct kn_cpu *cpu = (struct kn_cpu *)be;
    const struct kv_layer_view *kv = a->kv;
    if (a->n_tok <= 0) return;
    const int D = kv->head_dim;
    if (kv->n_head_kv <= 0 || a->n_head % kv->n_head_kv != 0 || D <= 0) {
        kn_cpu_set_error(cpu, "attention: %d query heads do not group over %d KV heads", a->n_head, kv->n_head_kv);
        memset(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * (D > 0 ? D : 0));
        return;
    }
    struct at_ctx c;
    memset(&c, 0, sizeof c);
    c.cpu = cpu;
    c.a = a;
    c.kv = kv;
    c.D = D;
    c.packed = kv->bits > 0;
    c.scalar = kn_cpu_scalar_forced(cpu);
    if (c.packed) {
        c.f = kv_qfmt_make(D, kv->group, kv->bits);
        if (!kvq_fmt_ok(c.f)) {
            kn_cpu_set_error(cpu, "attention: unsupported packed format (D=%d G=%d B=%d)", D, kv->group, kv->bits);
            memset(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * D);
            return;
        }
    }
    int max_slots = 0;
    for (int h = 0; h < kv->n_head_kv; h++) {
        int n = (c.packed ? kv->heads[h].n_q * kv->group : 0) + kv->heads[h].n_fp;
        max_slots = n > max_slots ? n : max_slots;
    }
    if (a->probs && a->probs_stride < max_slots) {
        kn_cpu_set_error(cpu, "attention: probs_stride %d < %d slots", a->probs_stride, max_slots);
        memset(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * D);
        return;
    }
    c.slots_pad = (max_slots + 7) & ~7;
    c.grp = a->n_head / kv->n_head_kv;
    // Split a KV head's query heads over items only when there are few (KV head, query) pairs; the split
    // depends on shapes alone.
    int base = kv->n_head_kv * a->n_tok;
    int want = base >= 8 ? 1 : (8 + base - 1) / base;
    if (want > c.grp) want = c.grp;
    c.hsub = (c.grp + want - 1) / want;
    c.n_sub = (c.grp + c.hsub - 1) / c.hsub;
    int nvg = c.packed ? D / c.f.VG : 1;
    size_t per = (size_t)c.hsub * ((size_t)c.slots_pad * (c.packed ? 1 + (size_t)nvg : 1) + 2 * (size_t)D + (size_t)nvg +
                                   KV_MAX_GROUP + 2) + 2 * (size_t)c.slots_pad + 2 + 64;
    if (kn_cpu_thread_scratch_reserve(cpu, per * sizeof(float)) != 0) {
        memset(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * D);
        return;
    }
    kn_cpu_parallel(cpu, base * c.n_sub, at_task, &c);
}
