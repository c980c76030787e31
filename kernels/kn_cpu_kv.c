// kernels/kn_cpu_kv.c — CPU KV cache writes: kv_store (fp32 -> fp16 slots), kv_move, KIVI quantisation jobs.
#include "kernels/kn_cpu_impl.h"

#include <string.h>

#include "kvcache/kv_quant_math.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KN_SIMD 1
#include <immintrin.h>
#endif

// dst(n) fp16 = src(n) fp32, round to nearest even.
static void to_half(kn_half *dst, const float *src, int n) {
    int i = 0;
#ifdef KN_SIMD
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; i++) dst[i] = kn_float_to_half(src[i]);
}

// k, v: (n_tok, n_head_kv, D); dst: (n_tok * n_head_kv) slots; pos: (n_tok).
void kn_cpu_kv_store(struct kn_backend *be, const struct kv_slot *dst, const float *k, const float *v,
                     const int32_t *pos, int n_tok, int n_head_kv, int D) {
    (void)be;
    for (int t = 0; t < n_tok; t++) {
        for (int h = 0; h < n_head_kv; h++) {
            const struct kv_slot *s = &dst[(size_t)t * n_head_kv + h];
            size_t row = ((size_t)t * n_head_kv + h) * (size_t)D;
            kvq_fp_pos(s->block)[s->slot] = pos[t];
            to_half(kvq_fp_k(s->block, D, s->slot), k + row, D);
            to_half(kvq_fp_v(s->block, D, s->slot), v + row, D);
        }
    }
}

// Slot copies src[i] -> dst[i] in order (pos, k, v).
void kn_cpu_kv_move(struct kn_backend *be, const struct kv_slot *src, const struct kv_slot *dst, int n, int D) {
    (void)be;
    for (int i = 0; i < n; i++) {
        if (src[i].block == dst[i].block && src[i].slot == dst[i].slot) continue;
        kvq_fp_pos(dst[i].block)[dst[i].slot] = kvq_fp_pos(src[i].block)[src[i].slot];
        memmove(kvq_fp_k(dst[i].block, D, dst[i].slot), kvq_fp_k(src[i].block, D, src[i].slot), (size_t)D * 2);
        memmove(kvq_fp_v(dst[i].block, D, dst[i].slot), kvq_fp_v(src[i].block, D, src[i].slot), (size_t)D * 2);
    }
}

// Value of fp slot src into group slot t: per-token groups of VG channels; fake-quant write-back.
static void job_value(const struct kv_qjob *j, struct kv_qfmt f) {
    const int D = f.D, VG = f.VG, nvg = D / VG;
    void *g = j->group;
    const struct kv_slot *s = &j->src[0];
    kn_half *vrow = kvq_fp_v(s->block, D, s->slot);
    uint32_t *vcode = kvq_vcode(g, f);
    kn_half *vs = kvq_vscale(g, f), *vz = kvq_vzero(g, f);
    for (int q = 0; q < nvg; q++) {
        float mn = kn_half_to_float(vrow[q * VG]), mx = mn;
        for (int d = 1; d < VG; d++) {
            float x = kn_half_to_float(vrow[q * VG + d]);
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
        }
        struct kvq_param p = kvq_param_make(mn, mx, f.B);
        vs[j->t * nvg + q] = p.hs;
        vz[j->t * nvg + q] = p.hz;
        for (int d = q * VG; d < (q + 1) * VG; d++) {
            uint32_t c = kvq_encode(kn_half_to_float(vrow[d]), p.s, p.z, f.B);
            kv_code_set(vcode, (size_t)j->t * D + d, f.B, c);
            vrow[d] = kn_float_to_half(kvq_decode(c, p.s, p.z));
        }
    }
    kvq_set_pos(g, f, j->t, kvq_fp_pos(s->block)[s->slot]);
}

// Keys of n_src fp slots into group slots 0..n_src-1, per channel over those tokens; write-back.
static void job_keys(const struct kv_qjob *j, struct kv_qfmt f) {
    const int D = f.D, G = f.G, n = j->n_src;
    void *g = j->group;
    uint32_t *kcode = kvq_kcode(g, f);
    kn_half *ks = kvq_kscale(g, f), *kz = kvq_kzero(g, f);
    for (int d = 0; d < D; d++) {
        float mn = 0.0f, mx = 0.0f;
        for (int t = 0; t < n; t++) {
            float x = kn_half_to_float(kvq_fp_k(j->src[t].block, D, j->src[t].slot)[d]);
            if (t == 0 || x < mn) mn = x;
            if (t == 0 || x > mx) mx = x;
        }
        struct kvq_param p = kvq_param_make(mn, mx, f.B);
        ks[d] = p.hs;
        kz[d] = p.hz;
        for (int t = 0; t < G; t++) {
            uint32_t c = 0;
            if (t < n) {
                kn_half *kr = kvq_fp_k(j->src[t].block, D, j->src[t].slot);
                c = kvq_encode(kn_half_to_float(kr[d]), p.s, p.z, f.B);
                kr[d] = kn_float_to_half(kvq_decode(c, p.s, p.z));
            }
            kv_code_set(kcode, (size_t)d * G + t, f.B, c);
        }
    }
    for (int t = 0; t < n; t++) kvq_set_pos(g, f, t, kvq_fp_pos(j->src[t].block)[j->src[t].slot]);
    for (int t = n; t < G; t++) *kvq_live(g) &= ~(1u << t);
}

// Token t_src of src_group (value codes, scales, zeros, position) into slot t of group.
static void job_copy_v(const struct kv_qjob *j, struct kv_qfmt f) {
    const int D = f.D, nvg = D / f.VG;
    void *sg = (void *)(uintptr_t)j->src_group;
    void *g = j->group;
    const uint32_t *sc = kvq_vcode(sg, f);
    uint32_t *dc = kvq_vcode(g, f);
    for (int d = 0; d < D; d++)
        kv_code_set(dc, (size_t)j->t * D + d, f.B, kv_code_get(sc, (size_t)j->t_src * D + d, f.B));
    for (int q = 0; q < nvg; q++) {
        kvq_vscale(g, f)[j->t * nvg + q] = kvq_vscale(sg, f)[j->t_src * nvg + q];
        kvq_vzero(g, f)[j->t * nvg + q] = kvq_vzero(sg, f)[j->t_src * nvg + q];
    }
    int32_t pos = *kvq_pos_base(sg) + kvq_pos_off(sg, f)[j->t_src];
    kvq_set_pos(g, f, j->t, pos);
}

void kn_cpu_kv_quant(struct kn_backend *be, const struct kv_qjob *jobs, int n, struct kv_qfmt fmt) {
    struct kn_cpu *cpu = (struct kn_cpu *)be;
    if (!kvq_fmt_ok(fmt)) {
        kn_cpu_set_error(cpu, "kv_quant: unsupported format D=%d G=%d B=%d VG=%d", fmt.D, fmt.G, fmt.B, fmt.VG);
        return;
    }
    for (int i = 0; i < n; i++) {
        const struct kv_qjob *j = &jobs[i];
        if (j->t < 0 || j->t >= fmt.G) {
            kn_cpu_set_error(cpu, "kv_quant: job %d slot %d outside group of %d", i, j->t, fmt.G);
            continue;
        }
        switch (j->kind) {
        case KV_QJOB_VALUE:
            if (j->n_src < 1) {
                kn_cpu_set_error(cpu, "kv_quant: value job %d without a source slot", i);
                break;
            }
            job_value(j, fmt);
            break;
        case KV_QJOB_KEYS:
            if (j->n_src < 0 || j->n_src > fmt.G) {
                kn_cpu_set_error(cpu, "kv_quant: keys job %d with %d sources (group %d)", i, j->n_src, fmt.G);
                break;
            }
            job_keys(j, fmt);
            break;
        case KV_QJOB_COPY_V:
            if (!j->src_group || j->t_src < 0 || j->t_src >= fmt.G) {
                kn_cpu_set_error(cpu, "kv_quant: copy job %d has no valid source", i);
                break;
            }
            job_copy_v(j, fmt);
            break;
        default: kn_cpu_set_error(cpu, "kv_quant: job %d has unknown kind %d", i, j->kind); break;
        }
    }
}
