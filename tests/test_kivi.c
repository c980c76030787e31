// tests/test_kivi.c — KIVI 2/4-bit KV cache: packing, quantisation error, fused attention, flush boundaries
// in both flush modes, composition with FastGen eviction, and compaction of sparse packed groups.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/params.h"
#include "kernels/kn.h"
#include "kernels/kn_cpu_impl.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_internal.h"
#include "kvcache/kv_layout.h"
#include "tests/test.h"

// ---- helpers -------------------------------------------------------------------------------------------

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_f(void) { return (float)((double)rnd_u32() / 4294967296.0 * 2.0 - 1.0); } // [-1, 1)
static float rnd_normal(void) {
    double u1 = ((double)rnd_u32() + 1.0) / 4294967297.0, u2 = (double)rnd_u32() / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static float h16(float x) { return kn_half_to_float(kn_float_to_half(x)); }

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static float hval(uint64_t key) {
    return (float)((double)(mix64(key) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// The K and V every test stores for (layer, KV head, position, channel): fp16-exact, keys with outlier
// channels (every 7th channel is shifted and wider, as real keys are), values plain.
static float tok_k(int l, int h, int pos, int d) {
    float u = hval(((uint64_t)1 << 62) ^ ((uint64_t)l << 52) ^ ((uint64_t)h << 44) ^ ((uint64_t)pos << 12) ^
                   (uint64_t)d);
    return h16(d % 7 == 3 ? 3.0f * u + 2.0f : u);
}
static float tok_v(int l, int h, int pos, int d) {
    float u = hval(((uint64_t)2 << 62) ^ ((uint64_t)l << 52) ^ ((uint64_t)h << 44) ^ ((uint64_t)pos << 12) ^
                   (uint64_t)d);
    return h16(u);
}
// Global range of key channel d (for loose bounds): [-1, 1) or [-1, 5).
static float k_channel_range(int d) { return d % 7 == 3 ? 6.0f : 2.0f; }

// Token flags by position: 0 is special (the cache adds that itself too), a few more specials, ~pct% punct.
static uint8_t tok_flags(int pos, int pct) {
    if (pos == 0 || pos % 97 == 50) return KV_TOK_SPECIAL;
    return (int)(mix64((uint64_t)pos * 7919u + 17u) % 100) < pct ? KV_TOK_PUNCT : 0;
}

// ---- reference KIVI quantiser (SPEC §4, written here; same float operations as the kernels) --------------
struct rq {
    float s, z;
};
static struct rq rq_make(const float *x, int n, int stride, int B) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    struct rq r;
    r.z = h16(mn);
    r.s = mx > mn ? h16((mx - mn) / (float)((1 << B) - 1)) : 0.0f;
    return r;
}
static uint32_t rq_code(float x, struct rq r, int B) {
    if (!(r.s > 0.0f)) return 0;
    float v = floorf((x - r.z) / r.s + 0.5f);
    if (!(v > 0.0f)) return 0;
    float top = (float)((1 << B) - 1);
    return v >= top ? (uint32_t)top : (uint32_t)v;
}
static float rq_deq(uint32_t c, struct rq r) { return fmaf((float)c, r.s, r.z); }
// Fake-quantised value of one token: per token over groups of VG channels.
static void ref_value(const float *v, int D, int VG, int B, float *out) {
    for (int q = 0; q < D / VG; q++) {
        struct rq r = rq_make(v + q * VG, VG, 1, B);
        for (int d = q * VG; d < (q + 1) * VG; d++)
            out[d] = rq_deq(rq_code(v[d], r, B), r);
    }
}

// Code i of a flat stream, read with explicit shifts (lowest bits first, 32/B codes per word).
static uint32_t raw_code(const uint32_t *w, size_t i, int B) {
    size_t per = 32 / (size_t)B;
    return (w[i / per] >> ((i % per) * (size_t)B)) & ((1u << B) - 1);
}

// Dequantised K and V of slot t of a packed group (host memory).
static void group_deq(const void *g, struct kv_qfmt f, int t, float *k, float *v) {
    const unsigned char *b = g;
    const uint32_t *kc = (const uint32_t *)(b + kv_q_off_kcode(f)),
                   *vc = (const uint32_t *)(b + kv_q_off_vcode(f));
    const kn_half *ks = (const kn_half *)(b + kv_q_off_kscale(f)),
                  *kz = (const kn_half *)(b + kv_q_off_kzero(f));
    const kn_half *vs = (const kn_half *)(b + kv_q_off_vscale(f)),
                  *vz = (const kn_half *)(b + kv_q_off_vzero(f));
    int nvg = f.D / f.VG;
    for (int d = 0; d < f.D; d++) {
        if (k)
            k[d] = fmaf((float)raw_code(kc, (size_t)d * f.G + t, f.B), kn_half_to_float(ks[d]),
                        kn_half_to_float(kz[d]));
        if (v) {
            int q = t * nvg + d / f.VG;
            v[d] = fmaf((float)raw_code(vc, (size_t)t * f.D + d, f.B), kn_half_to_float(vs[q]),
                        kn_half_to_float(vz[q]));
        }
    }
}
static int32_t group_pos(const void *g, struct kv_qfmt f, int t) {
    const unsigned char *b = g;
    int32_t base;
    memcpy(&base, b, 4);
    uint16_t off;
    memcpy(&off, b + kv_q_off_posoff(f) + 2 * (size_t)t, 2);
    return base + off;
}
static uint32_t group_live(const void *g) {
    uint32_t l;
    memcpy(&l, (const unsigned char *)g + 4, 4);
    return l;
}
static const kn_half *fp_k(void *blk, int D, int s) {
    return (const kn_half *)((unsigned char *)blk + kv_fp_off_k(D)) + (size_t)s * D;
}
static const kn_half *fp_v(void *blk, int D, int s) {
    return (const kn_half *)((unsigned char *)blk + kv_fp_off_v(D)) + (size_t)s * D;
}
static int32_t fp_pos(void *blk, int s) { return ((const int32_t *)blk)[s]; }

// ---- reference attention over an explicit cache ----------------------------------------------------------
// Expected contents of one KV head, indexed by position.
struct ecache {
    int cap, D;
    uint8_t *present;
    float *k, *v; // (cap, D)
};
static void ec_init(struct ecache *e, int cap, int D) {
    e->cap = cap;
    e->D = D;
    e->present = calloc((size_t)cap, 1);
    e->k = calloc((size_t)cap * D, sizeof(float));
    e->v = calloc((size_t)cap * D, sizeof(float));
}
static void ec_free(struct ecache *e) {
    free(e->present);
    free(e->k);
    free(e->v);
}
static void ec_clear(struct ecache *e) { memset(e->present, 0, (size_t)e->cap); }

// out(D) and probs by position (cap) of one query at position qp, in double; window as in kv_layout.h.
static void ref_attn(const struct ecache *e, const float *q, int qp, int window, float scale, double *out,
                     double *pp) {
    int D = e->D;
    double m = -INFINITY, sum = 0.0;
    double *l = malloc(sizeof(double) * (size_t)e->cap);
    for (int p = 0; p < e->cap; p++) {
        l[p] = -INFINITY;
        if (!e->present[p] || p > qp || (window > 0 && p <= qp - window)) continue;
        double dot = 0.0;
        for (int d = 0; d < D; d++)
            dot += (double)q[d] * e->k[(size_t)p * D + d];
        l[p] = scale * dot;
        m = l[p] > m ? l[p] : m;
    }
    for (int p = 0; p < e->cap; p++)
        sum += l[p] == -INFINITY ? 0.0 : exp(l[p] - m);
    for (int d = 0; d < D; d++)
        out[d] = 0.0;
    for (int p = 0; p < e->cap; p++) {
        pp[p] = l[p] == -INFINITY ? 0.0 : exp(l[p] - m) / sum;
        if (pp[p] != 0.0)
            for (int d = 0; d < D; d++)
                out[d] += pp[p] * e->v[(size_t)p * D + d];
    }
    free(l);
}

// Runs the backend's attention for queries at positions qpos[0..n_tok) over `view`, compares outputs with
// ref_attn over E[h] (one per KV head) and the probabilities of every slot (slot_pos: position per slot per
// head, -1 = dead) with the reference's; a dead slot must get probability 0. Returns the max output error.
static double check_attn_view(struct kn_backend *be, const struct kv_layer_view *view, const struct ecache *E,
                              int32_t *const *slot_pos, int n_head, const int32_t *qpos, int n_tok,
                              const char *what) {
    int D = view->head_dim, grp = n_head / view->n_head_kv,
        stride = view->max_slots > 0 ? view->max_slots : 1;
    float *q = malloc(sizeof(float) * (size_t)n_tok * n_head * D);
    float *out = malloc(sizeof(float) * (size_t)n_tok * n_head * D);
    float *probs = malloc(sizeof(float) * (size_t)n_head * n_tok * stride);
    for (size_t i = 0; i < (size_t)n_tok * n_head * D; i++)
        q[i] = rnd_f();
    struct kn_attn_args a;
    memset(&a, 0, sizeof a);
    a.out = out;
    a.q = q;
    a.q_pos = qpos;
    a.n_tok = n_tok;
    a.n_head = n_head;
    a.scale = 1.0f / sqrtf((float)D);
    a.kv = view;
    a.probs = probs;
    a.probs_stride = stride;
    be->ops->attention(be, &a);
    double *ro = malloc(sizeof(double) * D), *rp = malloc(sizeof(double) * E[0].cap);
    double err = 0.0, perr = 0.0;
    int dead_bad = 0;
    for (int hq = 0; hq < n_head; hq++) {
        int h = hq / grp;
        const struct kv_head_view *hv = &view->heads[h];
        int ns = (view->bits ? hv->n_q * view->group : 0) + hv->n_fp;
        for (int i = 0; i < n_tok; i++) {
            ref_attn(&E[h], q + ((size_t)i * n_head + hq) * D, qpos[i], view->window, a.scale, ro, rp);
            const float *o = out + ((size_t)i * n_head + hq) * D;
            for (int d = 0; d < D; d++) {
                double e = fabs(o[d] - ro[d]);
                err = e > err ? e : err;
            }
            const float *pr = probs + ((size_t)hq * n_tok + i) * stride;
            for (int s = 0; s < ns; s++) {
                int32_t p = slot_pos[h][s];
                if (p < 0) {
                    dead_bad += pr[s] != 0.0f;
                    continue;
                }
                double e = fabs(pr[s] - rp[p]);
                perr = e > perr ? e : perr;
            }
        }
    }
    CHECK_MSG(err <= 1e-5, "%s: attention output err %.3g", what, err);
    CHECK_MSG(perr <= 1e-6, "%s: attention probability err %.3g", what, perr);
    CHECK_MSG(dead_bad == 0, "%s: %d dead slots got attention", what, dead_bad);
    free(q);
    free(out);
    free(probs);
    free(ro);
    free(rp);
    return err;
}

// ---- 1. packing, quantisation error, per-channel keys ---------------------------------------------------

static void test_pack(void) {
    const int bits[] = {2, 4};
    const size_t lens[] = {1, 7, 8, 15, 16, 17, 31, 33, 1000};
    for (int bi = 0; bi < 2; bi++) {
        int B = bits[bi];
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            size_t n = lens[li];
            size_t nw = kv_q_words(n, B);
            CHECK_EQ_INT(nw, (n * (size_t)B + 31) / 32);
            uint32_t *w = malloc(nw * 4), *ref = calloc(nw, 4);
            uint32_t *c = malloc(n * 4);
            for (size_t i = 0; i < nw; i++)
                w[i] = rnd_u32(); // set must not depend on old contents
            for (size_t i = 0; i < n; i++) {
                c[i] = rnd_u32() & ((1u << B) - 1);
                ref[i / (32 / B)] |= c[i] << ((i % (32 / B)) * B); // lowest bits first
            }
            for (size_t i = 0; i < n; i++)
                kv_code_set(w, i, B, c[i]);
            int ok = 1;
            for (size_t i = 0; i < n; i++)
                ok &= kv_code_get(w, i, B) == c[i];
            // the words holding codes equal the reference layout; bits past the last code are untouched
            size_t full = n / (32 / B);
            int same = memcmp(w, ref, full * 4) == 0;
            if (n % (32 / B)) {
                uint32_t mask = (1u << ((n % (32 / B)) * B)) - 1;
                same &= (w[full] & mask) == ref[full];
            }
            CHECK_MSG(ok, "B=%d n=%zu: code round trip", B, n);
            CHECK_MSG(same, "B=%d n=%zu: packed words equal lowest-bits-first layout", B, n);
            // overwriting codes in place keeps neighbours
            for (size_t i = 0; i < n; i += 3) {
                c[i] = (c[i] + 1) & ((1u << B) - 1);
                kv_code_set(w, i, B, c[i]);
            }
            ok = 1;
            for (size_t i = 0; i < n; i++)
                ok &= kv_code_get(w, i, B) == c[i] && raw_code(w, i, B) == c[i];
            CHECK_MSG(ok, "B=%d n=%zu: rewrite keeps neighbours", B, n);
            free(w);
            free(ref);
            free(c);
        }
    }
    // 2-bit: 16 codes per word, 4-bit: 8; a known word
    uint32_t w2[1] = {0}, w4[1] = {0};
    for (int i = 0; i < 16; i++)
        kv_code_set(w2, (size_t)i, 2, (uint32_t)(i & 3));
    for (int i = 0; i < 8; i++)
        kv_code_set(w4, (size_t)i, 4, (uint32_t)(15 - i));
    CHECK_EQ_INT(w2[0], 0xe4e4e4e4u);
    CHECK_EQ_INT(w4[0], 0x89abcdefu);
}

// An fp block (host memory of the CPU backend) with rows x(n, D) as keys and values y(n, D).
static void *fp_block_with(struct kn_backend *be, int D, const float *x, const float *y, int n,
                           int32_t pos0) {
    unsigned char *blk = be->ops->alloc(be, kv_fp_block_bytes(D), KN_MEM_KV);
    for (int s = 0; s < n; s++) {
        ((int32_t *)blk)[s] = pos0 + s;
        for (int d = 0; d < D; d++) {
            ((kn_half *)(blk + kv_fp_off_k(D)))[(size_t)s * D + d] = kn_float_to_half(x[(size_t)s * D + d]);
            ((kn_half *)(blk + kv_fp_off_v(D)))[(size_t)s * D + d] = kn_float_to_half(y[(size_t)s * D + d]);
        }
    }
    return blk;
}

// Quantises keys X(n, D) per channel (KEYS job) and values Y(n, D) per token (VALUE jobs) into one group;
// returns the group (backend memory) and checks codes, the stream layout, error bounds and the fp write-back.
static void *quant_group(struct kn_backend *be, struct kv_qfmt f, const float *X, const float *Y, int n,
                         const char *what, double *kerr2, double *verr2) {
    int D = f.D, B = f.B, L = (1 << B) - 1;
    void *blk = fp_block_with(be, D, X, Y, n, 100);
    void *g = be->ops->alloc(be, kv_q_block_bytes(f), KN_MEM_KV);
    be->ops->memset0(be, g, kv_q_block_bytes(f));
    struct kv_slot src[KV_MAX_GROUP];
    struct kv_qjob jobs[KV_MAX_GROUP + 1];
    for (int t = 0; t < n; t++) {
        src[t].block = blk;
        src[t].slot = t;
        memset(&jobs[t + 1], 0, sizeof jobs[t + 1]);
        jobs[t + 1].kind = KV_QJOB_VALUE;
        jobs[t + 1].group = g;
        jobs[t + 1].t = t;
        jobs[t + 1].n_src = 1;
        jobs[t + 1].src = &src[t];
    }
    memset(&jobs[0], 0, sizeof jobs[0]);
    jobs[0].kind = KV_QJOB_KEYS;
    jobs[0].group = g;
    jobs[0].n_src = n;
    jobs[0].src = src;
    be->ops->kv_quant(be, jobs, n + 1, f);
    const unsigned char *gb = g;
    const uint32_t *kc = (const uint32_t *)(gb + kv_q_off_kcode(f)),
                   *vc = (const uint32_t *)(gb + kv_q_off_vcode(f));
    const kn_half *ks = (const kn_half *)(gb + kv_q_off_kscale(f)),
                  *kz = (const kn_half *)(gb + kv_q_off_kzero(f));
    const kn_half *vs = (const kn_half *)(gb + kv_q_off_vscale(f)),
                  *vz = (const kn_half *)(gb + kv_q_off_vzero(f));
    int ok_code = 1, ok_err = 1, ok_wb = 1, ok_pos = 1;
    float col[KV_MAX_GROUP];
    double worst = 0.0;
    for (int d = 0; d < D; d++) {
        for (int t = 0; t < n; t++)
            col[t] = h16(X[(size_t)t * D + d]);
        struct rq r = rq_make(col, n, 1, B);
        float s = kn_half_to_float(ks[d]), z = kn_half_to_float(kz[d]);
        ok_code &= s == r.s && z == r.z;
        for (int t = 0; t < f.G; t++) {
            uint32_t c = raw_code(kc, (size_t)d * f.G + t, B); // channel-major stream: index d*G + t
            if (t >= n) {
                ok_code &= c == 0;
                continue;
            }
            ok_code &= c == rq_code(col[t], r, B);
            float deq = fmaf((float)c, s, z), e = fabsf(deq - col[t]);
            float slack = ((float)L * s + fabsf(z)) * (1.0f / 1024.0f) + 1e-7f;
            ok_err &= e <= 0.5f * s + slack;
            worst = e / (0.5 * s + 1e-30) > worst ? e / (0.5 * s + 1e-30) : worst;
            if (kerr2) *kerr2 += (double)e * e;
            ok_wb &= fp_k(blk, D, t)[d] == kn_float_to_half(deq);
        }
    }
    int nvg = D / f.VG;
    for (int t = 0; t < n; t++) {
        ok_pos &= group_pos(g, f, t) == 100 + t;
        for (int q = 0; q < nvg; q++) {
            float row[KV_MAX_GROUP * 8];
            for (int d = 0; d < f.VG; d++)
                row[d] = h16(Y[(size_t)t * D + q * f.VG + d]);
            struct rq r = rq_make(row, f.VG, 1, B);
            float s = kn_half_to_float(vs[t * nvg + q]), z = kn_half_to_float(vz[t * nvg + q]);
            ok_code &= s == r.s && z == r.z;
            for (int d = 0; d < f.VG; d++) {
                int dd = q * f.VG + d;
                uint32_t c = raw_code(vc, (size_t)t * D + dd, B); // token-major stream: index t*D + d
                ok_code &= c == rq_code(row[d], r, B);
                float deq = fmaf((float)c, s, z), e = fabsf(deq - row[d]);
                float slack = ((float)L * s + fabsf(z)) * (1.0f / 1024.0f) + 1e-7f;
                ok_err &= e <= 0.5f * s + slack;
                if (verr2) *verr2 += (double)e * e;
                ok_wb &= fp_v(blk, D, t)[dd] == kn_float_to_half(deq);
            }
        }
    }
    ok_pos &= group_live(g) == (n == 32 ? 0xffffffffu : (1u << n) - 1);
    CHECK_MSG(ok_code, "%s: codes, scales and zeros follow SPEC §4 (channel-major keys, token-major values)",
              what);
    CHECK_MSG(ok_err, "%s: |dequant - x| <= s/2 (+ fp16 slack) (worst %.3f of s/2)", what, worst);
    CHECK_MSG(ok_wb, "%s: fp slots hold exactly the dequantised codes", what);
    CHECK_MSG(ok_pos, "%s: positions and live mask", what);
    be->ops->dealloc(be, blk);
    return g;
}

static void test_quant_error(struct kn_backend *be) {
    const int Ds[] = {8, 32, 64, 256};
    for (int di = 0; di < 4; di++)
        for (int B = 2; B <= 4; B += 2)
            for (int G = 8; G <= 32; G *= 2) {
                if ((G * B) % 32) continue;
                int D = Ds[di];
                struct kv_qfmt f = kv_qfmt_make(D, G, B);
                float *X = malloc(sizeof(float) * (size_t)G * D), *Y = malloc(sizeof(float) * (size_t)G * D);
                for (int kind = 0; kind < 4; kind++) {
                    int n = kind == 3 ? G / 2 + 1 : G; // a partial group too
                    for (int i = 0; i < G * D; i++) {
                        switch (kind) {
                        case 0:
                            X[i] = rnd_f();
                            Y[i] = rnd_f();
                            break; // uniform
                        case 1:
                            X[i] = 4.0f * rnd_normal();
                            Y[i] = 0.01f * rnd_normal();
                            break; // wide / narrow
                        case 2:
                            X[i] = 0.75f;
                            Y[i] = -2.0f;
                            break; // constant: s = 0
                        default:
                            X[i] = 1000.0f * rnd_f();
                            Y[i] = 60000.0f * rnd_f();
                            break; // large
                        }
                    }
                    char what[96];
                    snprintf(what, sizeof what, "quant D=%d G=%d B=%d data %d", D, G, B, kind);
                    void *g = quant_group(be, f, X, Y, n, what, NULL, NULL);
                    be->ops->dealloc(be, g);
                }
                free(X);
                free(Y);
            }
}

// Keys with a few outlier channels: per-channel grouping (KIVI) must beat per-token grouping by a wide
// margin. Both errors come from the kernels: the KEYS job groups per channel, the VALUE job (fed the same
// matrix) groups per token.
static void test_per_channel_keys(struct kn_backend *be) {
    const int D = 64, G = 32;
    for (int B = 2; B <= 4; B += 2) {
        struct kv_qfmt f = kv_qfmt_make(D, G, B);
        float *K = malloc(sizeof(float) * G * D);
        for (int t = 0; t < G; t++)
            for (int d = 0; d < D; d++) {
                float x = rnd_normal();
                if (d == 3 || d == 17 || d == 40 || d == 41) x = 15.0f + 2.0f * x; // outlier channels
                K[t * D + d] = x;
            }
        double e_chan = 0.0, e_tok = 0.0;
        char what[64];
        snprintf(what, sizeof what, "outlier keys B=%d", B);
        void *g = quant_group(be, f, K, K, G, what, &e_chan, &e_tok);
        double rms_c = sqrt(e_chan / (G * D)), rms_t = sqrt(e_tok / (G * D));
        printf("per-channel vs per-token key quantisation, B=%d: rms error %.4f vs %.4f (%.1fx)\n", B, rms_c,
               rms_t, rms_t / rms_c);
        CHECK_MSG(rms_c * 3.0 < rms_t, "B=%d: per-channel key error %.4f not well below per-token %.4f", B,
                  rms_c, rms_t);
        be->ops->dealloc(be, g);
        free(K);
    }
}

// ---- 2. fused attention over a hand-built view = attention over the explicitly dequantised cache
// ------------

static void test_fused_attention(struct kn_backend *be, struct kn_backend *be_scalar) {
    const int Ds[] = {8, 32, 64, 96, 256}; // 96: three value groups per token
    for (int di = 0; di < 5; di++)
        for (int B = 2; B <= 4; B += 2)
            for (int G = 8; G <= 32; G *= 2)
                for (int window = 0; window <= 40; window += 40) {
                    if ((G * B) % 32) continue;
                    // 3 query heads per KV head (pairs and a single), or 8 (groups of four share code
                    // expansion)
                    int D = Ds[di], n_kv = 2, n_head = window ? 6 : 16, n_q = 3, n_fp = 37;
                    struct kv_qfmt f = kv_qfmt_make(D, G, B);
                    int cap = n_q * 2 * G + n_fp + 8;
                    struct ecache E[2];
                    void *qb[2][3], *fb[2][2];
                    struct kv_head_view hv[2];
                    int32_t *sp[2];
                    int32_t pos = 0;
                    for (int h = 0; h < n_kv; h++) {
                        ec_init(&E[h], cap, D);
                        sp[h] = malloc(sizeof(int32_t) * (size_t)(n_q * G + n_fp));
                        pos = 0;
                        for (int g = 0; g < n_q; g++) {
                            size_t nb = kv_q_block_bytes(f);
                            unsigned char *gb = be->ops->alloc(be, nb, KN_MEM_KV);
                            for (size_t i = 0; i < nb; i++)
                                gb[i] = (unsigned char)rnd_u32(); // every code value
                            uint32_t live = (G == 32 ? 0xffffffffu : (1u << G) - 1) & (rnd_u32() | 5u);
                            int32_t base = pos;
                            memcpy(gb, &base, 4);
                            memcpy(gb + 4, &live, 4);
                            for (int t = 0; t < G; t++) {
                                uint16_t off = (uint16_t)(2 * t + (t & 1)); // gaps, like evicted neighbours
                                memcpy(gb + kv_q_off_posoff(f) + 2 * t, &off, 2);
                            }
                            kn_half *ks = (kn_half *)(gb + kv_q_off_kscale(f)),
                                    *kz = (kn_half *)(gb + kv_q_off_kzero(f));
                            for (int d = 0; d < D; d++) {
                                ks[d] = kn_float_to_half(0.3f * (rnd_f() + 1.0f));
                                kz[d] = kn_float_to_half(rnd_f());
                            }
                            kn_half *vs = (kn_half *)(gb + kv_q_off_vscale(f)),
                                    *vz = (kn_half *)(gb + kv_q_off_vzero(f));
                            for (size_t i = 0; i < kv_q_n_vgroups(f); i++) {
                                vs[i] = kn_float_to_half(0.3f * (rnd_f() + 1.0f));
                                vz[i] = kn_float_to_half(rnd_f());
                            }
                            for (int t = 0; t < G; t++) {
                                int32_t p = group_pos(gb, f, t);
                                sp[h][g * G + t] = (live >> t & 1) ? p : -1;
                                if (!(live >> t & 1)) continue;
                                E[h].present[p] = 1;
                                group_deq(gb, f, t, E[h].k + (size_t)p * D, E[h].v + (size_t)p * D);
                            }
                            qb[h][g] = gb;
                            pos += 2 * G;
                        }
                        for (int b = 0; b < 2; b++) {
                            float x[32 * 256], y[32 * 256];
                            for (int i = 0; i < 32 * D; i++) {
                                x[i] = rnd_f();
                                y[i] = rnd_f();
                            }
                            fb[h][b] = fp_block_with(be, D, x, y, 32, 0);
                        }
                        // fp positions follow the packed ones, in shuffled slot order
                        int32_t perm[64];
                        for (int s = 0; s < n_fp; s++)
                            perm[s] = pos + s;
                        for (int s = n_fp - 1; s > 0; s--) {
                            int r = (int)(rnd_u32() % (uint32_t)(s + 1));
                            int32_t tmp = perm[s];
                            perm[s] = perm[r];
                            perm[r] = tmp;
                        }
                        for (int s = 0; s < n_fp; s++) {
                            ((int32_t *)fb[h][s / 32])[s % 32] = perm[s];
                            int p = perm[s];
                            E[h].present[p] = 1;
                            for (int d = 0; d < D; d++) {
                                E[h].k[(size_t)p * D + d] =
                                    kn_half_to_float(fp_k(fb[h][s / 32], D, s % 32)[d]);
                                E[h].v[(size_t)p * D + d] =
                                    kn_half_to_float(fp_v(fb[h][s / 32], D, s % 32)[d]);
                            }
                            sp[h][n_q * G + s] = p;
                        }
                        hv[h].n_fp = n_fp;
                        hv[h].n_q = n_q;
                        hv[h].fp_blocks = fb[h];
                        hv[h].q_blocks = qb[h];
                    }
                    struct kv_layer_view view = {.n_head_kv = n_kv,
                                                 .head_dim = D,
                                                 .bits = B,
                                                 .group = G,
                                                 .window = window,
                                                 .max_slots = n_q * G + n_fp,
                                                 .heads = hv};
                    // queries: the newest position, one inside the packed region, one between fp tokens
                    int32_t qpos[3] = {pos + n_fp - 1, G + 3, pos + n_fp / 2};
                    char what[96];
                    snprintf(what, sizeof what, "fused attention D=%d G=%d B=%d window %d", D, G, B, window);
                    check_attn_view(be, &view, E, sp, n_head, qpos, 3, what);
                    snprintf(what, sizeof what, "fused attention (scalar) D=%d G=%d B=%d window %d", D, G, B,
                             window);
                    check_attn_view(be_scalar, &view, E, sp, n_head, qpos, 3, what);
                    for (int h = 0; h < n_kv; h++) {
                        for (int g = 0; g < n_q; g++)
                            be->ops->dealloc(be, qb[h][g]);
                        for (int b = 0; b < 2; b++)
                            be->ops->dealloc(be, fb[h][b]);
                        ec_free(&E[h]);
                        free(sp[h]);
                    }
                }
}

// ---- driving a real cache --------------------------------------------------------------------------------

struct drv {
    struct kn_backend *be;
    struct kv_cache *kv;
    struct kv_cache_params p;
    int pct;                // punctuation share of tok_flags
    int cap;                // tokens per call at most
    float *k, *v, *q, *out; // (cap, heads, D)
    int32_t *pos;
    uint8_t *fl;
};

static int drv_init(struct drv *d, struct kn_backend *be, const struct kv_cache_params *p, int pct, int cap) {
    char err[256];
    memset(d, 0, sizeof *d);
    d->be = be;
    d->p = *p;
    d->pct = pct;
    d->cap = cap;
    d->kv = kv_cache_init(be, p, err, sizeof err);
    if (!d->kv) {
        fprintf(stderr, "kv_cache_init: %s\n", err);
        return -1;
    }
    size_t n = (size_t)cap * p->n_head * p->head_dim;
    d->k = malloc(sizeof(float) * n);
    d->v = malloc(sizeof(float) * n);
    d->q = malloc(sizeof(float) * n);
    d->out = malloc(sizeof(float) * n);
    d->pos = malloc(sizeof(int32_t) * (size_t)cap);
    d->fl = malloc((size_t)cap);
    return 0;
}

static void drv_free(struct drv *d) {
    kv_cache_free(d->kv);
    free(d->k);
    free(d->v);
    free(d->q);
    free(d->out);
    free(d->pos);
    free(d->fl);
}

// Reserves n tokens at positions pos0.., stores their K/V in every layer and runs their attention the way the
// model does (observing probabilities when the cache asks for them). Does not commit. 0 ok.
static int drv_store(struct drv *d, int n, int32_t pos0) {
    const struct kv_cache_params *p = &d->p;
    int H = p->n_head_kv, D = p->head_dim;
    char err[256];
    for (int i = 0; i < n; i++) {
        d->pos[i] = pos0 + i;
        d->fl[i] = tok_flags(pos0 + i, d->pct);
    }
    if (kv_cache_reserve(d->kv, n, d->pos, d->fl, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        return -1;
    }
    for (int l = 0; l < p->n_layer; l++) {
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++)
                for (int dd = 0; dd < D; dd++) {
                    size_t at = ((size_t)i * H + h) * D + dd;
                    d->k[at] = tok_k(l, h, pos0 + i, dd);
                    d->v[at] = tok_v(l, h, pos0 + i, dd);
                }
        d->be->ops->kv_store(d->be, kv_cache_slots(d->kv, l), d->k, d->v, d->pos, n, H, D);
        for (size_t i = 0; i < (size_t)n * p->n_head * D; i++)
            d->q[i] = 2.0f * rnd_f();
        struct kn_attn_args a;
        memset(&a, 0, sizeof a);
        a.out = d->out;
        a.q = d->q;
        a.q_pos = d->pos;
        a.n_tok = n;
        a.n_head = p->n_head;
        a.scale = 1.0f / sqrtf((float)D);
        a.probs = kv_cache_probs(d->kv, l, &a.probs_stride);
        a.kv = kv_cache_view(d->kv, l);
        d->be->ops->attention(d->be, &a);
        if (a.probs && kv_cache_observe(d->kv, l, d->pos)) return -1;
    }
    return 0;
}

// A prompt of n tokens (positions continue the context), fed in chunks of `chunk`; commits PROMPT_END.
static int drv_prompt(struct drv *d, int n, int chunk) {
    int p0 = kv_cache_n_past(d->kv);
    kv_cache_begin_prompt(d->kv, p0 + n);
    for (int i = 0; i < n; i += chunk) {
        int m = n - i < chunk ? n - i : chunk;
        if (drv_store(d, m, p0 + i)) return -1;
        if (kv_cache_commit(d->kv, i + m == n ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK)) return -1;
    }
    return 0;
}

static int drv_decode(struct drv *d) {
    if (drv_store(d, 1, kv_cache_n_past(d->kv))) return -1;
    return kv_cache_commit(d->kv, KV_PHASE_DECODE);
}

// ---- what a head holds, checked against the truth ---------------------------------------------------------

enum { ST_FP = 1, ST_PACKED = 2, ST_KQ = 4, ST_VQ = 8 };

struct census {
    int n_fp, n_q, n_fill;
    int exact, vq, kq; // fp tokens: exact K and V / quantised value / quantised key
    int packed, dead;  // live and dead slots of packed groups
};

// Key error budget of the packed tokens of one head, by position: a key's dequantised value may move only
// when its group is merged (compaction), and each such move may add at most s'/2 of the merged group (SPEC §5
// note in kv_kivi.c). The first sighting gets the loose bound (one quantisation, possibly one merge).
struct khist {
    int cap, D;
    uint8_t *known;
    float *prev, *allow; // (cap, D)
    int n_moves;         // keys seen moving (merged groups)
};
static void kh_init(struct khist *kh, int cap, int D) {
    kh->cap = cap;
    kh->D = D;
    kh->known = calloc((size_t)cap, 1);
    kh->prev = calloc((size_t)cap * D, sizeof(float));
    kh->allow = calloc((size_t)cap * D, sizeof(float));
    kh->n_moves = 0;
}
static void kh_free(struct khist *kh) {
    free(kh->known);
    free(kh->prev);
    free(kh->allow);
}

// Walks one head: positions (host mirrors vs backend memory, each position once), flags, the contents of
// every token against tok_k/tok_v (exact, per-token fake-quantised values, keys within their bound),
// fill-group bookkeeping. Fills st[pos] (ST_* bits), E with the cache's explicit contents (for attention
// references), and slot_pos with the position of each attention slot (-1 dead). Returns the number of failed
// checks.
static int check_head(struct drv *d, int l, int h, uint8_t *st, struct ecache *E, int32_t *slot_pos,
                      struct census *c, struct khist *kh, const char *what) {
    struct kv_cache *kv = d->kv;
    struct kv_head *hd = kv_head_at(kv, l, h);
    const int D = d->p.head_dim, G = d->p.group, B = d->p.bits, L = (1 << B) - 1;
    struct kv_qfmt f = kv_qfmt_make(D, G, B);
    int fails0 = test_n_fail;
    memset(c, 0, sizeof *c);
    memset(st, 0, (size_t)E->cap);
    ec_clear(E);
    c->n_fp = hd->n_fp;
    c->n_q = hd->n_q;
    c->n_fill = hd->n_fill;
    CHECK_MSG(hd->n_fpb == (hd->n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK,
              "%s l%d h%d: %d fp blocks for %d slots", what, l, h, hd->n_fpb, hd->n_fp);
    float orig[512], deq[512], refv[512];
    int pos_ok = 1, flag_ok = 1, v_ok = 1, k_ok = 1, fill_ok = 1, uniq = 1;
    double worst_k = 0.0;
    int *fill_refs = calloc((size_t)(hd->n_fill + 1) * KV_MAX_GROUP, sizeof(int));
    for (int s = 0; s < hd->n_fp; s++) {
        void *blk = hd->fpb[s / KV_FP_BLOCK];
        int si = s % KV_FP_BLOCK, p = hd->pos[s];
        pos_ok &= fp_pos(blk, si) == p && p >= 0 && p < E->cap;
        if (p < 0 || p >= E->cap) continue;
        uniq &= st[p] == 0;
        uint8_t want_fl = tok_flags(p, d->pct) | (p == 0 ? KV_TOK_SPECIAL : 0);
        flag_ok &= (hd->flags[s] & (KV_TOK_SPECIAL | KV_TOK_PUNCT)) == want_fl;
        st[p] = ST_FP;
        slot_pos[hd->n_q * G + s] = p;
        E->present[p] = 1;
        int vq = 0, kq = 0, fg = -1, t = -1;
        if (hd->pend && hd->pend[s] >= 0) {
            fg = hd->pend[s] / KV_MAX_GROUP;
            t = hd->pend[s] % KV_MAX_GROUP;
            if (fg >= hd->n_fill) {
                fill_ok = 0;
                continue;
            }
            fill_refs[fg * KV_MAX_GROUP + t]++;
            const struct kv_group_meta *m = &hd->fm[fg];
            vq = (m->vdone >> t) & 1;
            kq = m->kdone != 0;
            fill_ok &= kv_gm_pos(m, t) == p && group_pos(hd->fb[fg], f, t) == p && ((m->live >> t) & 1) &&
                       (m->flags[t] & (KV_TOK_SPECIAL | KV_TOK_PUNCT)) == want_fl;
        }
        st[p] |= (vq ? ST_VQ : 0) | (kq ? ST_KQ : 0);
        c->exact += !vq && !kq;
        c->vq += vq;
        c->kq += kq;
        // values: exact, or the per-token fake quantisation of the original rounded to fp16; the fill group's
        // codes decode to the same
        for (int dd = 0; dd < D; dd++)
            orig[dd] = tok_v(l, h, p, dd);
        if (vq) {
            ref_value(orig, D, f.VG, B, refv);
            group_deq(hd->fb[fg], f, t, NULL, deq);
        }
        for (int dd = 0; dd < D; dd++) {
            float x = kn_half_to_float(fp_v(blk, D, si)[dd]);
            v_ok &= vq ? (x == h16(refv[dd]) && x == h16(deq[dd])) : x == orig[dd];
            E->v[(size_t)p * D + dd] = x;
        }
        // keys: exact, or (block mode) the fill group's codes rounded to fp16, within s/2 of the original
        if (kq) group_deq(hd->fb[fg], f, t, deq, NULL);
        const kn_half *ks = kq ? (const kn_half *)((unsigned char *)hd->fb[fg] + kv_q_off_kscale(f)) : NULL;
        for (int dd = 0; dd < D; dd++) {
            float x = kn_half_to_float(fp_k(blk, D, si)[dd]), o = tok_k(l, h, p, dd);
            if (kq) {
                float sc = kn_half_to_float(ks[dd]);
                k_ok &= x == h16(deq[dd]) && fabsf(x - o) <= 0.5f * sc + 0.004f * fabsf(o) + 1e-6f;
            } else {
                k_ok &= x == o;
            }
            E->k[(size_t)p * D + dd] = x;
        }
    }
    // fill groups: ours keeps queued tokens dense in slots 0..n_filled-1; block mode marks evicted slots dead
    for (int fi = 0; fi < hd->n_fill; fi++) {
        const struct kv_group_meta *m = &hd->fm[fi];
        uint32_t refd = 0;
        for (int t = 0; t < KV_MAX_GROUP; t++) {
            fill_ok &= fill_refs[fi * KV_MAX_GROUP + t] <= 1;
            if (fill_refs[fi * KV_MAX_GROUP + t]) refd |= 1u << t;
        }
        fill_ok &= m->live == refd && group_live(hd->fb[fi]) == m->live;
        if (!m->kdone) fill_ok &= refd == (m->n_filled == 32 ? 0xffffffffu : (1u << m->n_filled) - 1);
        fill_ok &=
            refd != 0 || m->kdone; // an empty ours-mode group may wait for tokens; never a dead packed one
    }
    free(fill_refs);
    // packed groups
    for (int g = 0; g < hd->n_q; g++) {
        const struct kv_group_meta *m = &hd->qm[g];
        void *gb = hd->qb[g];
        pos_ok &= group_live(gb) == m->live && m->live != 0;
        const kn_half *ks = (const kn_half *)((unsigned char *)gb + kv_q_off_kscale(f));
        for (int t = 0; t < G; t++) {
            slot_pos[g * G + t] = -1;
            if (!((m->live >> t) & 1)) {
                c->dead++;
                continue;
            }
            int p = kv_gm_pos(m, t);
            pos_ok &= group_pos(gb, f, t) == p && p >= 0 && p < E->cap;
            if (p < 0 || p >= E->cap) continue;
            uniq &= st[p] == 0;
            st[p] = ST_PACKED | ST_KQ | ST_VQ;
            c->packed++;
            slot_pos[g * G + t] = p;
            E->present[p] = 1;
            uint8_t want_fl = tok_flags(p, d->pct) | (p == 0 ? KV_TOK_SPECIAL : 0);
            flag_ok &= (m->flags[t] & (KV_TOK_SPECIAL | KV_TOK_PUNCT)) == want_fl;
            for (int dd = 0; dd < D; dd++)
                orig[dd] = tok_v(l, h, p, dd);
            ref_value(orig, D, f.VG, B, refv);
            group_deq(gb, f, t, E->k + (size_t)p * D, E->v + (size_t)p * D);
            int moved = 0;
            for (int dd = 0; dd < D; dd++) {
                v_ok &= E->v[(size_t)p * D + dd] == refv[dd]; // values per token: exact whatever the group
                float x = E->k[(size_t)p * D + dd], o = tok_k(l, h, p, dd), e = fabsf(x - o);
                // keys: within s/2 of a fresh group; a merged group adds its own s'/2 (bounded by the channel
                // range)
                float sc = kn_half_to_float(ks[dd]), slack = 0.004f * fabsf(o) + 1e-6f;
                float bound = 0.5f * sc + 0.5f * k_channel_range(dd) / (float)L + slack;
                if (kh) {
                    size_t at = (size_t)p * D + dd;
                    if (!kh->known[p]) {
                        kh->allow[at] = bound;
                    } else if (x != kh->prev[at]) {
                        kh->allow[at] += 0.5f * sc + slack;
                        moved = 1;
                    }
                    kh->prev[at] = x;
                    bound = kh->allow[at];
                }
                k_ok &= e <= bound;
                double r = e / (0.5 * sc + 1e-30);
                worst_k = r > worst_k ? r : worst_k;
            }
            if (kh) {
                kh->known[p] = 1;
                kh->n_moves += moved;
            }
        }
    }
    CHECK_MSG(pos_ok, "%s l%d h%d: positions and live masks agree between host and backend", what, l, h);
    CHECK_MSG(uniq, "%s l%d h%d: every position held once", what, l, h);
    CHECK_MSG(flag_ok, "%s l%d h%d: token flags carried", what, l, h);
    CHECK_MSG(v_ok, "%s l%d h%d: values exact or per-token fake-quantised", what, l, h);
    CHECK_MSG(k_ok, "%s l%d h%d: keys exact or within their quantisation bound (worst %.2f s/2)", what, l, h,
              worst_k);
    CHECK_MSG(fill_ok, "%s l%d h%d: fill-group bookkeeping", what, l, h);
    return test_n_fail - fails0;
}

// Pools and byte accounting of the whole cache: blocks in use equal the heads' blocks, stats bytes equal
// them.
static void check_accounting(struct drv *d, const char *what) {
    struct kv_cache *kv = d->kv;
    const struct kv_cache_params *p = &d->p;
    struct kv_qfmt f = kv_qfmt_make(p->head_dim, p->group, p->bits);
    uint64_t n_fpb = 0, n_groups = 0, retained = 0;
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    if (kv_cache_stats(kv, &s)) {
        CHECK_MSG(0, "%s: stats", what);
        return;
    }
    int ret_ok = 1, cap_ok = 1;
    for (int i = 0; i < p->n_layer * p->n_head_kv; i++) {
        struct kv_head *hd = &kv->heads[i];
        n_fpb += (uint64_t)hd->n_fpb;
        n_groups += (uint64_t)(hd->n_q + hd->n_fill);
        int live = 0;
        for (int g = 0; g < hd->n_q; g++)
            live += __builtin_popcount(hd->qm[g].live);
        retained += (uint64_t)(hd->n_fp + live);
        ret_ok &= s.heads[i].retained == hd->n_fp + live;
        cap_ok &= hd->cap_q <= 4 || hd->cap_q < 4 * hd->n_q; // packed arrays shrink when groups go
    }
    size_t q_codes = 2 * 4 * kv_q_words((size_t)f.D * f.G, f.B);
    CHECK_MSG(kv->fp_pool.n_used == n_fpb, "%s: fp pool %llu blocks in use, heads hold %llu", what,
              (unsigned long long)kv->fp_pool.n_used, (unsigned long long)n_fpb);
    CHECK_MSG(kv->q_pool.n_used == n_groups, "%s: packed pool %llu blocks in use, heads hold %llu", what,
              (unsigned long long)kv->q_pool.n_used, (unsigned long long)n_groups);
    CHECK_EQ_INT(kv_cache_blocks_in_use(kv), n_fpb + n_groups);
    CHECK_EQ_INT(s.bytes_fp, n_fpb * kv_fp_block_bytes(p->head_dim));
    CHECK_EQ_INT(s.bytes_codes, n_groups * q_codes);
    CHECK_EQ_INT(s.bytes_scales, n_groups * (2 * 2 * (size_t)f.D + 2 * 2 * kv_q_n_vgroups(f)));
    CHECK_EQ_INT(s.retained_tokens, (int64_t)retained);
    CHECK_MSG(ret_ok, "%s: per-head retained counts", what);
    CHECK_MSG(cap_ok, "%s: packed-group arrays sized to the groups held", what);
    CHECK_EQ_INT(s.kv_bytes, s.bytes_fp + s.bytes_codes + s.bytes_scales + s.bytes_meta);
    kv_stats_release(&s);
}

// ---- 3. flush boundaries --------------------------------------------------------------------------------

// Expected state of every position after N tokens (all kept): ours / the paper's block flush.
static uint8_t expect_state(int pos, int N, int R, int G, int block, int *packed) {
    int M = N > R ? N - R : 0; // left the exact window
    if (!block) {
        int np = M / G * G;
        *packed = pos < np;
        if (pos < np) return ST_PACKED | ST_KQ | ST_VQ;
        return ST_FP | (pos < M ? ST_VQ : 0);
    }
    int Kq = N / R * R; // keys flushed R at a time
    int np = (Kq < M ? Kq : M) / G * G;
    *packed = pos < np;
    if (pos < np) return ST_PACKED | ST_KQ | ST_VQ;
    return ST_FP | (pos < Kq ? ST_KQ : 0) | (pos < M ? ST_VQ : 0);
}

// The expected contents of one head after N tokens, computed from tok_k/tok_v alone: keys of position p are
// quantised over the G positions of its group floor(p/G); fp slots hold fp16-rounded dequantised values.
static void expect_contents(struct ecache *X, int l, int h, int N, int R, int G, int B, int block) {
    int D = X->D;
    struct kv_qfmt f = kv_qfmt_make(D, G, B);
    ec_clear(X);
    float col[KV_MAX_GROUP], orig[512], refv[512];
    for (int g0 = 0; g0 < N; g0 += G) {
        int packed;
        uint8_t e0 = expect_state(g0, N, R, G, block, &packed);
        for (int d = 0; d < D; d++) {
            struct rq r = {0.0f, 0.0f};
            if (e0 & ST_KQ) { // the whole group's keys are quantised together (it lies inside [0, N))
                for (int t = 0; t < G; t++)
                    col[t] = tok_k(l, h, g0 + t, d);
                r = rq_make(col, G, 1, B);
            }
            for (int p = g0; p < g0 + G && p < N; p++) {
                float kx = tok_k(l, h, p, d);
                if (e0 & ST_KQ) {
                    kx = rq_deq(rq_code(kx, r, B), r);
                    if (!packed) kx = h16(kx);
                }
                X->k[(size_t)p * D + d] = kx;
            }
        }
    }
    for (int p = 0; p < N; p++) {
        int packed;
        uint8_t e = expect_state(p, N, R, G, block, &packed);
        X->present[p] = 1;
        for (int d = 0; d < D; d++)
            orig[d] = tok_v(l, h, p, d);
        if (e & ST_VQ) ref_value(orig, D, f.VG, B, refv);
        for (int d = 0; d < D; d++)
            X->v[(size_t)p * D + d] = (e & ST_VQ) ? (packed ? refv[d] : h16(refv[d])) : orig[d];
    }
}

// After each commit of a cache holding N tokens (no eviction): states, counts, bytes, contents, attention.
static void check_flush_state(struct drv *d, int N, struct ecache *E, struct ecache *X, uint8_t *st,
                              int32_t *sp, const char *what) {
    const struct kv_cache_params *p = &d->p;
    int R = p->residual, G = p->group, block = p->flush == KV_FLUSH_BLOCK;
    int M = N > R ? N - R : 0;
    int Kq = block ? N / R * R : 0;
    int n_packed = block ? (Kq < M ? Kq : M) / G * G : M / G * G;
    int exp_fill = block ? Kq / G - n_packed / G : (M - n_packed > 0);
    for (int l = 0; l < p->n_layer; l++) {
        const struct kv_layer_view *view = kv_cache_view(d->kv, l);
        int32_t *sps[8];
        struct census c[8];
        for (int h = 0; h < p->n_head_kv; h++) {
            sps[h] = sp + (size_t)h * (p->n_ctx + 64);
            if (check_head(d, l, h, st, &E[h], sps[h], &c[h], NULL, what)) return;
            int bad = 0;
            for (int pos = 0; pos < p->n_ctx; pos++) {
                int packed;
                uint8_t e = pos < N ? expect_state(pos, N, R, G, block, &packed) : 0;
                if (st[pos] != e) {
                    if (!bad)
                        fprintf(stderr, "%s N=%d l%d h%d: position %d state %#x, expected %#x\n", what, N, l,
                                h, pos, st[pos], e);
                    bad++;
                }
            }
            CHECK_MSG(bad == 0, "%s N=%d l%d h%d: %d positions in the wrong state", what, N, l, h, bad);
            CHECK_EQ_INT(c[h].n_q, n_packed / G);
            CHECK_EQ_INT(c[h].packed, n_packed);
            CHECK_EQ_INT(c[h].dead, 0);
            CHECK_EQ_INT(c[h].n_fp, N - n_packed);
            CHECK_EQ_INT(c[h].n_fill, exp_fill);
            CHECK_EQ_INT(c[h].vq, M - n_packed);
            CHECK_EQ_INT(c[h].exact, block ? N - (Kq > M ? Kq : M) : N - M);
            // contents equal what tok_k/tok_v and the SPEC's quantiser predict, element for element
            expect_contents(X, l, h, N, R, G, p->bits, block);
            int same = memcmp(X->present, E[h].present, (size_t)X->cap) == 0;
            for (int pos = 0; pos < N && same; pos++)
                same &=
                    memcmp(X->k + (size_t)pos * X->D, E[h].k + (size_t)pos * X->D, sizeof(float) * X->D) ==
                        0 &&
                    memcmp(X->v + (size_t)pos * X->D, E[h].v + (size_t)pos * X->D, sizeof(float) * X->D) == 0;
            CHECK_MSG(same, "%s N=%d l%d h%d: cache contents equal the predicted fake-quantised K/V", what, N,
                      l, h);
            expect_contents(&E[h], l, h, N, R, G, p->bits, block); // the reference below uses the prediction
        }
        if (N > 0) {
            int32_t qpos[2] = {N - 1, N > 6 ? N - 6 : 0};
            char w2[160];
            snprintf(w2, sizeof w2, "%s N=%d layer %d", what, N, l);
            check_attn_view(d->be, view, E, sps, p->n_head, qpos, 2, w2);
        }
    }
    check_accounting(d, what);
}

static void test_flush_boundaries(struct kn_backend *be) {
    struct cfg {
        int B, G, R, D;
    } cfgs[] = {{2, 16, 32, 32}, {4, 32, 64, 16}, {4, 8, 16, 64}, {2, 32, 32, 8}};
    for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++)
        for (int block = 0; block <= 1; block++) {
            struct cfg c = cfgs[ci];
            int prompts[] = {c.R - 1, c.R, c.R + 1, c.R + c.G, c.R / 2, 3 * c.R + c.G - 1};
            for (size_t pi = 0; pi < sizeof prompts / sizeof *prompts; pi++) {
                struct kv_cache_params p;
                kv_cache_params_default(&p);
                p.n_layer = 2;
                p.n_head_kv = 2;
                p.n_head = 4;
                p.head_dim = c.D;
                p.n_ctx = 4 * c.R + 3 * c.G + 8;
                p.bits = c.B;
                p.group = c.G;
                p.residual = c.R;
                p.flush = block ? KV_FLUSH_BLOCK : KV_FLUSH_TOKEN;
                struct drv d;
                if (drv_init(&d, be, &p, 20, p.n_ctx)) {
                    CHECK(0);
                    return;
                }
                struct ecache E[2], X;
                for (int h = 0; h < 2; h++)
                    ec_init(&E[h], p.n_ctx, c.D);
                ec_init(&X, p.n_ctx, c.D);
                uint8_t *st = malloc((size_t)p.n_ctx);
                int32_t *sp = malloc(sizeof(int32_t) * 2 * (size_t)(p.n_ctx + 64));
                char what[96];
                snprintf(what, sizeof what, "flush %s B=%d G=%d R=%d D=%d prompt %d",
                         block ? "block" : "ours", c.B, c.G, c.R, c.D, prompts[pi]);
                int N = prompts[pi];
                // the prompt in two chunks when it is long (no packing between chunks), then decode steps
                int ok = drv_prompt(&d, N, N > c.R ? N / 2 + 1 : N) == 0;
                CHECK_MSG(ok, "%s: prompt", what);
                if (ok) check_flush_state(&d, N, E, &X, st, sp, what);
                int steps = c.R + 2 * c.G + 3;
                for (int i = 0; i < steps && ok && N < p.n_ctx; i++) {
                    ok = drv_decode(&d) == 0;
                    N++;
                    CHECK_MSG(ok, "%s: decode", what);
                    if (ok) check_flush_state(&d, N, E, &X, st, sp, what);
                }
                free(st);
                free(sp);
                for (int h = 0; h < 2; h++)
                    ec_free(&E[h]);
                ec_free(&X);
                drv_free(&d);
            }
        }
}

// ---- 4. composition with FastGen --------------------------------------------------------------------------

// Score of the token at fp slot s / packed slot (g, t).
static float head_score_fp(const struct kv_head *hd, int s) { return hd->score ? hd->score[s] : 0.0f; }

// Checks that every retained token is one the head's policy keeps (the staging window, special, punct, local,
// or a heavy hitter: fewer than k retained tokens score higher), and, when `complete` is set, that every
// token the policy's special/punct components always keep is retained. Returns failed checks.
static int check_policy(struct drv *d, int l, int h, const uint8_t *st, int complete, const char *what) {
    struct kv_cache *kv = d->kv;
    struct kv_head *hd = kv_head_at(kv, l, h);
    int newest = kv_cache_n_past(kv) - 1, R = d->p.residual, G = d->p.group;
    int k = hd->heavy_k ? hd->heavy_k : (int)(d->p.heavy_ratio * (float)kv_cache_n_past(kv));
    int fails0 = test_n_fail;
    // all retained scores
    int n = 0;
    float *sc = malloc(sizeof(float) * (size_t)(hd->n_fp + hd->n_q * G + 1));
    int32_t *ps = malloc(sizeof(int32_t) * (size_t)(hd->n_fp + hd->n_q * G + 1));
    for (int s = 0; s < hd->n_fp; s++) {
        sc[n] = head_score_fp(hd, s);
        ps[n++] = hd->pos[s];
    }
    for (int g = 0; g < hd->n_q; g++)
        for (int t = 0; t < G; t++)
            if ((hd->qm[g].live >> t) & 1) {
                sc[n] = hd->qscore ? hd->qscore[g * G + t] : 0.0f;
                ps[n++] = kv_gm_pos(&hd->qm[g], t);
            }
    int bad = 0, missing = 0;
    uint32_t c = hd->comps;
    // kept by a part of the rule other than FREQ
    uint8_t *other = malloc((size_t)n + 1);
    for (int i = 0; i < n; i++) {
        int p = ps[i];
        uint8_t fl = tok_flags(p, d->pct) | (p == 0 ? KV_TOK_SPECIAL : 0);
        other[i] = p > newest - R || (c & KV_C_FULL) || ((c & KV_C_SPECIAL) && (fl & KV_TOK_SPECIAL)) ||
                   ((c & KV_C_PUNCT) && (fl & KV_TOK_PUNCT)) ||
                   ((c & KV_C_LOCAL) && p > newest - hd->local_w);
    }
    // FREQ keeps the k top scores: over all tokens (FastGen's r_f x n), or, with a fixed heavy_k (H2O), over
    // the tokens nothing else keeps
    for (int i = 0; i < n; i++) {
        int keep = other[i], higher = 0;
        if (!keep && (c & KV_C_FREQ)) {
            for (int j = 0; j < n; j++)
                higher += sc[j] > sc[i] && (!hd->heavy_k || !other[j]);
            keep = higher < k;
        }
        if (!keep) {
            if (!bad)
                fprintf(stderr,
                        "%s l%d h%d: position %d (score %g, %d higher, k %d, newest %d) retained against "
                        "policy %#x\n",
                        what, l, h, ps[i], (double)sc[i], higher, k, newest, c);
            bad++;
        }
    }
    free(other);
    if (complete)
        for (int p = 0; p <= newest; p++) {
            uint8_t fl = tok_flags(p, d->pct) | (p == 0 ? KV_TOK_SPECIAL : 0);
            int must = p > newest - R || (c & KV_C_FULL) || ((c & KV_C_SPECIAL) && (fl & KV_TOK_SPECIAL)) ||
                       ((c & KV_C_PUNCT) && (fl & KV_TOK_PUNCT));
            missing += must && !st[p];
        }
    CHECK_MSG(bad == 0, "%s l%d h%d: %d retained tokens outside policy %#x", what, l, h, bad, c);
    CHECK_MSG(missing == 0, "%s l%d h%d: %d tokens the policy keeps were lost", what, l, h, missing);
    free(sc);
    free(ps);
    return test_n_fail - fails0;
}

// All invariants of a cache under eviction: per head contents, policy, no sparse packed storage (fewer than G
// dead slots: compaction ran), attention equal to attention over the live tokens only, accounting.
static int check_composed(struct drv *d, struct ecache *E, uint8_t *st, int32_t *sp, struct khist *kh,
                          int complete, const char *what) {
    const struct kv_cache_params *p = &d->p;
    int fails0 = test_n_fail;
    for (int l = 0; l < p->n_layer; l++) {
        int32_t *sps[8];
        for (int h = 0; h < p->n_head_kv; h++) {
            struct census c;
            sps[h] = sp + (size_t)h * (p->n_ctx + 64);
            check_head(d, l, h, st, &E[h], sps[h], &c, &kh[l * p->n_head_kv + h], what);
            check_policy(d, l, h, st, complete, what);
            CHECK_MSG(c.dead < p->group || p->n_ctx > 65536,
                      "%s l%d h%d: %d dead packed slots (%d groups, %d live)", what, l, h, c.dead, c.n_q,
                      c.packed);
        }
        int newest = kv_cache_n_past(d->kv) - 1;
        int32_t qpos[3] = {newest, newest / 2, newest - p->residual - 3 > 0 ? newest - p->residual - 3 : 0};
        char w2[160];
        snprintf(w2, sizeof w2, "%s layer %d", what, l);
        check_attn_view(d->be, kv_cache_view(d->kv, l), E, sps, p->n_head, qpos, 3, w2);
    }
    check_accounting(d, what);
    return test_n_fail - fails0;
}

static void compose_params(struct kv_cache_params *p, int B, int block, float T) {
    kv_cache_params_default(p);
    p->n_layer = 2;
    p->n_head_kv = 2;
    p->n_head = 4;
    p->head_dim = 32;
    p->n_ctx = 640;
    p->policy = KV_POLICY_FASTGEN;
    p->recovery = T;
    p->bits = B;
    p->group = 16;
    p->residual = 32;
    p->flush = block ? KV_FLUSH_BLOCK : KV_FLUSH_TOKEN;
}

// Explicit head policies set after a lossless prompt (T = 1 keeps every head full): special+punct,
// +heavy, +heavy+local, special only. Then decoding evicts from the fp region, the fill groups and packed
// groups.
static void test_fastgen_explicit(struct kn_backend *be) {
    for (int B = 2; B <= 4; B += 2)
        for (int block = 0; block <= 1; block++) {
            struct kv_cache_params p;
            compose_params(&p, B, block, 1.0f);
            struct drv d;
            if (drv_init(&d, be, &p, 25, 64)) {
                CHECK(0);
                return;
            }
            char what[96];
            snprintf(what, sizeof what, "fastgen x kivi B=%d %s", B, block ? "block" : "ours");
            struct ecache E[2];
            for (int h = 0; h < 2; h++)
                ec_init(&E[h], p.n_ctx, p.head_dim);
            uint8_t *st = malloc((size_t)p.n_ctx);
            int32_t *sp = malloc(sizeof(int32_t) * 2 * (size_t)(p.n_ctx + 64));
            struct khist kh[4];
            for (int i = 0; i < 4; i++)
                kh_init(&kh[i], p.n_ctx, p.head_dim);
            int ok = drv_prompt(&d, 200, 64) == 0;
            CHECK_MSG(ok, "%s: prompt", what);
            for (int i = 0; i < p.n_layer * p.n_head_kv; i++)
                CHECK_EQ_INT(d.kv->heads[i].comps, KV_C_FULL);
            check_composed(&d, E, st, sp, kh, 1, what);
            uint64_t blocks_full = kv_cache_blocks_in_use(d.kv);
            struct kv_stats s0, s1;
            memset(&s0, 0, sizeof s0);
            memset(&s1, 0, sizeof s1);
            kv_cache_stats(d.kv, &s0);
            const uint32_t pol[4] = {KV_C_SPECIAL | KV_C_PUNCT, KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ,
                                     KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL, KV_C_SPECIAL};
            for (int i = 0; i < 4; i++) {
                d.kv->heads[i].comps = pol[i];
                d.kv->heads[i].local_w = 40;
                d.kv->heads[i].heavy_k = 0;
            }
            for (int step = 0; step < 160 && ok; step++) {
                ok = drv_decode(&d) == 0;
                CHECK_MSG(ok, "%s: decode %d", what, step);
                char w2[128];
                snprintf(w2, sizeof w2, "%s step %d", what, step);
                if (ok && check_composed(&d, E, st, sp, kh, 1, w2)) break;
                if (step == 0) {
                    // storage really returned: the special-only head keeps a few groups, every head lost
                    // blocks
                    kv_cache_stats(d.kv, &s1);
                    CHECK_MSG(kv_cache_blocks_in_use(d.kv) < blocks_full, "%s: blocks %llu -> %llu", what,
                              (unsigned long long)blocks_full,
                              (unsigned long long)kv_cache_blocks_in_use(d.kv));
                    CHECK_MSG(s1.kv_bytes < s0.kv_bytes && s1.bytes_codes < s0.bytes_codes,
                              "%s: bytes %llu -> %llu", what, (unsigned long long)s0.kv_bytes,
                              (unsigned long long)s1.kv_bytes);
                    struct kv_head *hs = kv_head_at(d.kv, 1, 1);
                    CHECK_MSG(hs->n_q <= 1, "%s: special-only head keeps %d packed groups", what, hs->n_q);
                    for (int i = 0; i < 4; i++) {
                        int live = 0;
                        struct kv_head *hd = &d.kv->heads[i];
                        for (int g = 0; g < hd->n_q; g++)
                            live += __builtin_popcount(hd->qm[g].live);
                        CHECK_MSG(hd->n_q == (live + p.group - 1) / p.group,
                                  "%s head %d: %d groups for %d live", what, i, hd->n_q, live);
                    }
                }
            }
            kv_stats_release(&s0);
            kv_stats_release(&s1);
            int moves = 0;
            for (int i = 0; i < 4; i++)
                moves += kh[i].n_moves;
            printf("%s: %d key moves by compaction over 160 steps\n", what, moves);
            for (int i = 0; i < 4; i++)
                kh_free(&kh[i]);
            free(st);
            free(sp);
            for (int h = 0; h < 2; h++)
                ec_free(&E[h]);
            drv_free(&d);
        }
}

// FastGen choosing the policies itself (T = 0.9), a second user turn re-profiling, decoding in between.
static void test_fastgen_profiled(struct kn_backend *be) {
    for (int B = 2; B <= 4; B += 2)
        for (int block = 0; block <= 1; block++) {
            struct kv_cache_params p;
            compose_params(&p, B, block, 0.75f);
            struct drv d;
            if (drv_init(&d, be, &p, 30, 64)) {
                CHECK(0);
                return;
            }
            char what[96];
            snprintf(what, sizeof what, "fastgen profiled B=%d %s", B, block ? "block" : "ours");
            struct ecache E[2];
            for (int h = 0; h < 2; h++)
                ec_init(&E[h], p.n_ctx, p.head_dim);
            uint8_t *st = malloc((size_t)p.n_ctx);
            int32_t *sp = malloc(sizeof(int32_t) * 2 * (size_t)(p.n_ctx + 64));
            struct khist kh[4];
            for (int i = 0; i < 4; i++)
                kh_init(&kh[i], p.n_ctx, p.head_dim);
            int ok = drv_prompt(&d, 150, 48) == 0;
            CHECK_MSG(ok, "%s: prompt", what);
            int fails = ok ? check_composed(&d, E, st, sp, kh, 0, what) : 1;
            for (int step = 0; step < 120 && ok && !fails; step++) {
                if (step == 60) { // a new user turn
                    ok = drv_prompt(&d, 70, 32) == 0;
                    CHECK_MSG(ok, "%s: second prompt", what);
                } else {
                    ok = drv_decode(&d) == 0;
                    CHECK_MSG(ok, "%s: decode %d", what, step);
                }
                char w2[128];
                snprintf(w2, sizeof w2, "%s step %d", what, step);
                if (ok) fails = check_composed(&d, E, st, sp, kh, 0, w2);
            }
            int evicting = 0;
            printf("%s: policies", what);
            for (int i = 0; i < 4; i++) {
                evicting += !(d.kv->heads[i].comps & KV_C_FULL);
                printf(" %s (%.3f)", kv_comps_name(d.kv->heads[i].comps), (double)d.kv->heads[i].recovery);
            }
            printf("\n");
            CHECK_MSG(evicting > 0, "%s: some head evicts (got none; the test would prove little)", what);
            for (int i = 0; i < 4; i++)
                kh_free(&kh[i]);
            free(st);
            free(sp);
            for (int h = 0; h < 2; h++)
                ec_free(&E[h]);
            drv_free(&d);
        }
}

// ---- 5. compaction of sparse packed groups ----------------------------------------------------------------

// A decode step committed by hand: evictions first, then a snapshot of the packed tokens, then the KIVI
// commit (which compacts), as kv_cache_commit runs them per head.
struct snap {
    int n;
    int32_t pos[4096];
    uint8_t flags[4096];
    float score[4096];
    float k[4096][32], v[4096][32];
};

static void snap_head(struct kv_head *hd, struct kv_qfmt f, struct snap *sn) {
    sn->n = 0;
    for (int g = 0; g < hd->n_q; g++)
        for (int t = 0; t < f.G; t++) {
            if (!((hd->qm[g].live >> t) & 1) || sn->n == 4096) continue;
            int i = sn->n++;
            sn->pos[i] = kv_gm_pos(&hd->qm[g], t);
            sn->flags[i] = hd->qm[g].flags[t];
            sn->score[i] = hd->qscore ? hd->qscore[g * f.G + t] : 0.0f;
            group_deq(hd->qb[g], f, t, sn->k[i], sn->v[i]);
        }
}

static void test_compaction(struct kn_backend *be) {
    static struct snap before[4];
    for (int B = 2; B <= 4; B += 2)
        for (int block = 0; block <= 1; block++) {
            struct kv_cache_params p;
            compose_params(&p, B, block, 1.0f);
            struct drv d;
            if (drv_init(&d, be, &p, 30, 64)) {
                CHECK(0);
                return;
            }
            struct kv_qfmt f = kv_qfmt_make(p.head_dim, p.group, B);
            char what[96];
            snprintf(what, sizeof what, "compaction B=%d %s", B, block ? "block" : "ours");
            int ok = drv_prompt(&d, 256, 64) == 0;
            CHECK_MSG(ok, "%s: prompt", what);
            for (int i = 0; i < 4; i++) {
                d.kv->heads[i].comps =
                    i == 3 ? KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ : KV_C_SPECIAL | KV_C_PUNCT;
                d.kv->heads[i].heavy_k = 20;
            }
            uint64_t q_used0 = d.kv->q_pool.n_used;
            ok = ok && drv_store(&d, 1, kv_cache_n_past(d.kv)) == 0;
            int dead0[4] = {0}, nq0[4] = {0};
            for (int i = 0; i < 4 && ok; i++) {
                ok = kv_evict_head(d.kv, i / 2, i % 2, KV_PHASE_DECODE) == 0;
                struct kv_head *hd = &d.kv->heads[i];
                snap_head(hd, f, &before[i]);
                nq0[i] = hd->n_q;
                dead0[i] = hd->n_q * p.group - before[i].n;
            }
            for (int i = 0; i < 4 && ok; i++)
                ok = kv_kivi_commit(d.kv, i / 2, i % 2) == 0;
            d.kv->n_res = 0;
            CHECK_MSG(ok, "%s: hand-made commit", what);
            double max_rel = 0.0, sum_d2 = 0.0, sum_q2 = 0.0;
            long n_el = 0, n_moved = 0;
            for (int i = 0; i < 4 && ok; i++) {
                struct kv_head *hd = &d.kv->heads[i];
                static struct snap after;
                snap_head(hd, f, &after);
                CHECK_MSG(dead0[i] >= p.group, "%s head %d: only %d dead slots before (the test needs >= G)",
                          what, i, dead0[i]);
                CHECK_EQ_INT(after.n, before[i].n);
                CHECK_EQ_INT(hd->n_q, (before[i].n + p.group - 1) / p.group);
                CHECK_MSG(hd->n_q < nq0[i], "%s head %d: %d groups -> %d", what, i, nq0[i], hd->n_q);
                int same_set = after.n == before[i].n, v_same = 1, meta_same = 1, k_ok = 1;
                for (int a = 0; a < after.n && same_set; a++) {
                    int b = 0;
                    while (b < before[i].n && before[i].pos[b] != after.pos[a])
                        b++;
                    if (b == before[i].n) {
                        same_set = 0;
                        break;
                    }
                    meta_same &= before[i].flags[b] == after.flags[a] && before[i].score[b] == after.score[a];
                    v_same &= memcmp(before[i].v[b], after.v[a], sizeof(float) * (size_t)p.head_dim) == 0;
                    // the merged group's scale of each channel bounds the move of each key
                    int g = 0, t = 0;
                    for (g = 0; g < hd->n_q; g++) {
                        for (t = 0; t < p.group; t++)
                            if (((hd->qm[g].live >> t) & 1) && kv_gm_pos(&hd->qm[g], t) == after.pos[a])
                                break;
                        if (t < p.group) break;
                    }
                    const kn_half *ks = (const kn_half *)((unsigned char *)hd->qb[g] + kv_q_off_kscale(f));
                    const kn_half *kz = (const kn_half *)((unsigned char *)hd->qb[g] + kv_q_off_kzero(f));
                    int moved = 0;
                    for (int dd = 0; dd < p.head_dim; dd++) {
                        float s1 = kn_half_to_float(ks[dd]), z1 = kn_half_to_float(kz[dd]);
                        float delta = fabsf(after.k[a][dd] - before[i].k[b][dd]);
                        float slack = ((float)((1 << B) - 1) * s1 + fabsf(z1)) * (1.0f / 1024.0f) + 1e-6f;
                        k_ok &= delta <= 0.5f * s1 + slack;
                        if (s1 > 0.0f && delta / (0.5 * s1) > max_rel) max_rel = delta / (0.5 * s1);
                        float e0 = before[i].k[b][dd] - tok_k(i / 2, i % 2, after.pos[a], dd);
                        sum_d2 += (double)delta * delta;
                        sum_q2 += (double)e0 * e0;
                        n_el++;
                        moved |= delta != 0.0f;
                    }
                    n_moved += moved;
                }
                CHECK_MSG(same_set, "%s head %d: the same live tokens after compaction", what, i);
                CHECK_MSG(meta_same, "%s head %d: flags and scores carried", what, i);
                CHECK_MSG(v_same, "%s head %d: values copied exactly", what, i);
                CHECK_MSG(k_ok, "%s head %d: keys moved by at most s'/2 of the merged group", what, i);
            }
            CHECK_MSG(d.kv->q_pool.n_used < q_used0, "%s: packed blocks %llu -> %llu", what,
                      (unsigned long long)q_used0, (unsigned long long)d.kv->q_pool.n_used);
            printf("%s: keys of %ld/%d merged tokens moved; max move %.2f s'/2, rms move %.4f vs rms first "
                   "quantisation error %.4f\n",
                   what, n_moved, before[0].n + before[1].n + before[2].n + before[3].n, max_rel,
                   sqrt(sum_d2 / (double)(n_el ? n_el : 1)), sqrt(sum_q2 / (double)(n_el ? n_el : 1)));
            // and the cache goes on consistently (more evictions, more compactions)
            struct ecache E[2];
            for (int h = 0; h < 2; h++)
                ec_init(&E[h], p.n_ctx, p.head_dim);
            uint8_t *st = malloc((size_t)p.n_ctx);
            int32_t *sp = malloc(sizeof(int32_t) * 2 * (size_t)(p.n_ctx + 64));
            struct khist kh[4];
            for (int i = 0; i < 4; i++)
                kh_init(&kh[i], p.n_ctx, p.head_dim);
            for (int step = 0; step < 60 && ok; step++) {
                ok = drv_decode(&d) == 0;
                char w2[128];
                snprintf(w2, sizeof w2, "%s then step %d", what, step);
                if (ok && check_composed(&d, E, st, sp, kh, 1, w2)) break;
            }
            for (int i = 0; i < 4; i++)
                kh_free(&kh[i]);
            free(st);
            free(sp);
            for (int h = 0; h < 2; h++)
                ec_free(&E[h]);
            drv_free(&d);
        }
}

// Positions more than 65535 apart never share a group (pos_off is 16-bit): a context that jumps from position
// 19 to 70000 closes the filling group early, and compaction merges only within reach.
static void test_position_jump(struct kn_backend *be) {
    for (int block = 0; block <= 1; block++) {
        struct kv_cache_params p;
        compose_params(&p, 2, block, 1.0f);
        p.n_ctx = 70200;
        struct drv d;
        if (drv_init(&d, be, &p, 30, 64)) {
            CHECK(0);
            return;
        }
        char what[96];
        snprintf(what, sizeof what, "position jump %s", block ? "block" : "ours");
        struct ecache E[2];
        for (int h = 0; h < 2; h++)
            ec_init(&E[h], p.n_ctx, p.head_dim);
        uint8_t *st = malloc((size_t)p.n_ctx);
        int32_t *sp = malloc(sizeof(int32_t) * 2 * (size_t)(p.n_ctx + 64));
        struct khist kh[4];
        for (int i = 0; i < 4; i++)
            kh_init(&kh[i], p.n_ctx, p.head_dim);
        int ok = drv_prompt(&d, 40, 40) == 0;
        for (int step = 0; step < 110 && ok; step++) {
            if (step == 60)
                for (int i = 0; i < 4; i++)
                    d.kv->heads[i].comps = KV_C_SPECIAL | KV_C_PUNCT;
            ok = drv_store(&d, 1, 70000 + step) == 0 && kv_cache_commit(d.kv, KV_PHASE_DECODE) == 0;
            CHECK_MSG(ok, "%s: decode %d", what, step);
            char w2[128];
            snprintf(w2, sizeof w2, "%s step %d", what, step);
            if (!ok || step % 10 != 9) continue;
            if (check_composed(&d, E, st, sp, kh, 0, w2)) break;
            for (int i = 0; i < 4; i++) {
                struct kv_head *hd = &d.kv->heads[i];
                int lo = 0, hi = 0, span_ok = 1;
                for (int g = 0; g < hd->n_q; g++) {
                    int mn = 1 << 30, mx = -1;
                    for (int t = 0; t < p.group; t++)
                        if ((hd->qm[g].live >> t) & 1) {
                            int q = kv_gm_pos(&hd->qm[g], t);
                            mn = q < mn ? q : mn;
                            mx = q > mx ? q : mx;
                            lo += q < 65536;
                            hi += q >= 65536;
                        }
                    span_ok &= mx - mn <= 65535;
                }
                CHECK_MSG(span_ok, "%s head %d: a group spans more than 65535 positions", w2, i);
                int opt = (lo + p.group - 1) / p.group + (hi + p.group - 1) / p.group;
                CHECK_MSG(hd->n_q <= opt || step < 60, "%s head %d: %d groups for %d + %d live tokens", w2, i,
                          hd->n_q, lo, hi);
            }
        }
        CHECK(ok);
        for (int i = 0; i < 4; i++)
            kh_free(&kh[i]);
        free(st);
        free(sp);
        for (int h = 0; h < 2; h++)
            ec_free(&E[h]);
        drv_free(&d);
    }
}

int main(void) {
    char err[256];
    // one thread for the cache tests (a spinning pool only costs time on a shared machine); two threads and
    // the forced-scalar kernels for the fused attention test
    struct kn_backend *be = kn_cpu_init(1, err, sizeof err);
    struct kn_backend *be2 = kn_cpu_init(2, err, sizeof err);
    struct kn_backend *be_scalar = kn_cpu_init(1, err, sizeof err);
    if (!be || !be2 || !be_scalar) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return 1;
    }
    kn_cpu_force_scalar(be_scalar, 1);
    test_pack();
    test_quant_error(be);
    test_per_channel_keys(be);
    test_fused_attention(be2, be_scalar);
    test_flush_boundaries(be);
    test_fastgen_explicit(be);
    test_fastgen_profiled(be);
    test_compaction(be);
    test_position_jump(be);
    kn_free(be);
    kn_free(be2);
    kn_free(be_scalar);
    return test_done();
}
