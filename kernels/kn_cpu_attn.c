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
    for (; d < D; d++) s += kn_half_to_float(k[d]) * q[d];
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
    for (; d < D; d++) o[d] += p * kn_half_to_float(v[d]);
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

// Key logits (without scale) of the G tokens of group g for nh heads: lg[h*G + t] = Σ_d qs[h*D+d]·code(d,t).
static void group_key_dots(const struct at_ctx *c, const void *g, const float *qs, int nh, float *lg) {
    const struct kv_qfmt f = c->f;
    const int D = f.D, G = f.G, B = f.B;
    const uint32_t *kc = kvq_kcode((void *)(uintptr_t)g, f);
#ifdef KN_SIMD
    if (!c->scalar && (B == 2 || B == 4) && G % 8 == 0 && ((size_t)G * B) % 32 == 0) {
        const int nv = G / 8, wpc = G * B / 32; // vectors of 8 tokens, words per channel
        for (int h0 = 0; h0 < nh; h0 += 2) {
            const int two = h0 + 1 < nh;
            __m256 acc0[4], acc1[4];
            for (int v = 0; v < 4; v++) acc0[v] = acc1[v] = _mm256_setzero_ps();
            const float *q0 = qs + (size_t)h0 * D, *q1 = q0 + (two ? D : 0);
            for (int d = 0; d < D; d++) {
                const uint32_t *w = kc + (size_t)d * wpc;
                __m256 a0 = _mm256_broadcast_ss(q0 + d), a1 = _mm256_broadcast_ss(q1 + d);
                for (int v = 0; v < nv; v++) {
                    __m256 cv = codes8(w, v, B);
                    acc0[v] = _mm256_fmadd_ps(a0, cv, acc0[v]);
                    acc1[v] = _mm256_fmadd_ps(a1, cv, acc1[v]);
                }
            }
            for (int v = 0; v < nv; v++) {
                _mm256_storeu_ps(lg + (size_t)h0 * G + 8 * v, acc0[v]);
                if (two) _mm256_storeu_ps(lg + (size_t)(h0 + 1) * G + 8 * v, acc1[v]);
            }
        }
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
        float z = kn_half_to_float(vz[q]);
        for (int h = 0; h < nh; h++) zacc[(size_t)h * nvg + q] += p[h] * z;
    }
#ifdef KN_SIMD
    if (!c->scalar && (B == 2 || B == 4) && VG % 8 == 0 && ((size_t)D * B) % 32 == 0) {
        const uint32_t *w = vc + (size_t)t * D * B / 32;
        for (int d0 = 0; d0 < D; d0 += 8) {
            __m256 cv = codes8(w, d0 / 8, B);
            float s = kn_half_to_float(vs[d0 / VG]);
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
        float s = kn_half_to_float(vs[d / VG]);
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

    // scratch: logits (nh, slots_pad) | out (nh, D) | qs (nh, D) | zacc (nh, nvg) | lg (nh, G) | zq, p (nh)
    float *L = kn_cpu_thread_scratch(c->cpu, tid);
    float *O = L + (size_t)nh * c->slots_pad;
    float *QS = O + (size_t)nh * D;
    float *ZA = QS + (size_t)nh * D;
    float *LG = ZA + (size_t)nh * (nvg ? nvg : 1);
    float *ZQ = LG + (size_t)nh * KV_MAX_GROUP;
    float *P = ZQ + nh;
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
        for (int h = 0; h < nh; h++) {
            float zq = 0.0f;
            for (int d = 0; d < D; d++) {
                float qd = q[(size_t)h * D + d];
                QS[(size_t)h * D + d] = qd * kn_half_to_float(ks[d]);
                zq += qd * kn_half_to_float(kz[d]);
            }
            ZQ[h] = zq;
        }
        group_key_dots(c, gb, QS, nh, LG);
        for (int h = 0; h < nh; h++)
            for (int t = 0; t < G; t++)
                L[(size_t)h * c->slots_pad + g * G + t] =
                    (vis >> t & 1) ? a->scale * (LG[(size_t)h * G + t] + ZQ[h]) : -INFINITY;
    }
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
    for (int h = 0; h < nh; h++) softmax_row(L + (size_t)h * c->slots_pad, n_slots, simd);

    // 3. weighted values
    memset(O, 0, sizeof(float) * (size_t)nh * D);
    if (nvg) memset(ZA, 0, sizeof(float) * (size_t)nh * nvg);
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

    // 4. outputs and probabilities
    for (int h = 0; h < nh; h++) {
        float *out = a->out + ((size_t)i * a->n_head + hq0 + h) * D;
        for (int d = 0; d < D; d++) out[d] = O[(size_t)h * D + d] + (nvg ? ZA[(size_t)h * nvg + d / c->f.VG] : 0.0f);
        if (a->probs) {
            float *pr = a->probs + ((size_t)(hq0 + h) * a->n_tok + i) * a->probs_stride;
            memcpy(pr, L + (size_t)h * c->slots_pad, sizeof(float) * (size_t)n_slots);
            if (a->probs_stride > n_slots) memset(pr + n_slots, 0, sizeof(float) * (size_t)(a->probs_stride - n_slots));
        }
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
    size_t per = (size_t)c.hsub * ((size_t)c.slots_pad + 2 * (size_t)D + (size_t)nvg + KV_MAX_GROUP + 2) + 64;
    if (kn_cpu_thread_scratch_reserve(cpu, per * sizeof(float)) != 0) {
        memset(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * D);
        return;
    }
    kn_cpu_parallel(cpu, base * c.n_sub, at_task, &c);
}
