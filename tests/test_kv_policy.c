// tests/test_kv_policy.c — FastGen on constructed attention maps (profiler choices, recovery, GQA mean/min,
// retained sets and budgets while decoding) and on random-weight models (T = 1 is lossless bit for bit).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/eval.h"
#include "app/params.h"
#include "kernels/kn.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_layout.h"
#include "model/model.h"
#include "model/synth.h"
#include "tests/test.h"

#define MAXP 600 // positions a rig can hold
#define L_PROMPT 128

// ---- a rig: one cache driven through its public API with constructed attention ----------------------

struct rig;
// Unnormalised attention weight (>= 0) of query head hq of `layer` at position qpos on the key at kpos.
typedef double (*map_fn)(const struct rig *r, int layer, int hq, int qpos, int kpos);

struct rig {
    struct kn_backend *be;
    struct kv_cache *kv;
    struct kv_cache_params p;
    int n_past;
    uint8_t flags[MAXP]; // flags of every position seen (after the cache's own rule: position 0 special)
    double *score; // (n_layer, n_head_kv, MAXP) group-mean attention each key received, as the cache sees
    int n_special, n_punct;
    int n_obs; // layers that returned a probability buffer in the last feed
};

static int rig_init(struct rig *r, struct kn_backend *be, int n_layer, int n_head_kv, int n_head, int policy,
                    float recovery, int bits) {
    memset(r, 0, sizeof *r);
    r->be = be;
    kv_cache_params_default(&r->p);
    r->p.n_layer = n_layer;
    r->p.n_head_kv = n_head_kv;
    r->p.n_head = n_head;
    r->p.head_dim = 32;
    r->p.n_ctx = MAXP;
    r->p.policy = policy;
    r->p.recovery = recovery;
    r->p.bits = bits;
    r->p.residual = 32;
    char err[256];
    r->kv = kv_cache_init(be, &r->p, err, sizeof err);
    CHECK_MSG(r->kv != NULL, "%s", err);
    r->score = calloc((size_t)n_layer * n_head_kv * MAXP, sizeof *r->score);
    return r->kv && r->score ? 0 : -1;
}

static void rig_free(struct rig *r) {
    kv_cache_free(r->kv);
    free(r->score);
}

static double *rig_score(const struct rig *r, int layer, int h) {
    return r->score + ((size_t)layer * r->p.n_head_kv + h) * MAXP;
}

// Position held in probability index j of head h (packed groups first, then fp slots), -1 when dead.
static int view_pos(const struct kv_layer_view *v, int h, int j) {
    const struct kv_head_view *hv = &v->heads[h];
    int G = v->group;
    if (v->bits && j < hv->n_q * G) {
        const char *g = hv->q_blocks[j / G];
        int32_t base;
        uint32_t live;
        uint16_t off;
        memcpy(&base, g, 4);
        memcpy(&live, g + 4, 4);
        memcpy(&off, g + kv_q_off_posoff(kv_qfmt_make(v->head_dim, G, v->bits)) + 2 * (size_t)(j % G), 2);
        return (live >> (j % G) & 1) ? base + off : -1;
    }
    int s = j - (v->bits ? hv->n_q * G : 0);
    const char *blk = hv->fp_blocks[s / KV_FP_BLOCK];
    int32_t pos;
    memcpy(&pos, blk + kv_fp_off_pos() + 4 * (size_t)(s % KV_FP_BLOCK), 4);
    return pos;
}

static int view_n_slots(const struct kv_layer_view *v, int h) {
    return (v->bits ? v->heads[h].n_q * v->group : 0) + v->heads[h].n_fp;
}

// Positions head (layer, h) holds, as a 0/1 map over positions; returns their count.
static int held_map(struct rig *r, int layer, int h, uint8_t *held) {
    memset(held, 0, MAXP);
    const struct kv_layer_view *v = kv_cache_view(r->kv, layer);
    int n = 0, dup = 0;
    for (int j = 0; j < view_n_slots(v, h); j++) {
        int p = view_pos(v, h, j);
        if (p < 0) continue;
        if (p >= MAXP || held[p]) {
            dup++;
            continue;
        }
        held[p] = 1;
        n++;
    }
    CHECK_MSG(dup == 0, "layer %d head %d: %d slots hold a duplicate or bad position", layer, h, dup);
    return n;
}

// Every held fp slot still carries the K/V written for its position (compaction moved data with positions).
static int check_contents(struct rig *r, int layer, int h) {
    const struct kv_layer_view *v = kv_cache_view(r->kv, layer);
    const struct kv_head_view *hv = &v->heads[h];
    int D = v->head_dim, bad = 0;
    for (int s = 0; s < hv->n_fp; s++) {
        const char *blk = hv->fp_blocks[s / KV_FP_BLOCK];
        int32_t pos;
        memcpy(&pos, blk + kv_fp_off_pos() + 4 * (size_t)(s % KV_FP_BLOCK), 4);
        kn_half k0, v0, v1;
        memcpy(&k0, blk + kv_fp_off_k(D) + 2 * (size_t)(s % KV_FP_BLOCK) * D, 2);
        memcpy(&v0, blk + kv_fp_off_v(D) + 2 * (size_t)(s % KV_FP_BLOCK) * D, 2);
        memcpy(&v1, blk + kv_fp_off_v(D) + 2 * ((size_t)(s % KV_FP_BLOCK) * D + 1), 2);
        if (kn_half_to_float(k0) != (float)pos || kn_half_to_float(v0) != (float)(layer * 16 + h) ||
            kn_half_to_float(v1) != (float)pos)
            bad++;
    }
    return bad;
}

// One micro-batch of n tokens: reserve, store K/V (k[0] = pos, v[0] = layer*16+h, v[1] = pos), write
// the map's rows (normalised over the visible held keys) where the cache asks, observe, commit.
static void rig_feed(struct rig *r, int n, const uint8_t *fl, int phase, map_fn f) {
    const struct kv_cache_params *p = &r->p;
    int H = p->n_head_kv, D = p->head_dim, ng = p->n_head / H;
    int32_t pos[MAXP];
    for (int i = 0; i < n; i++) {
        pos[i] = r->n_past + i;
        uint8_t x = fl ? fl[i] : 0;
        if (pos[i] == 0) x |= KV_TOK_SPECIAL;
        r->flags[pos[i]] = x;
        if (x & KV_TOK_SPECIAL)
            r->n_special++;
        else if (x & KV_TOK_PUNCT)
            r->n_punct++;
    }
    char err[256];
    int rc = kv_cache_reserve(r->kv, n, pos, fl, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc) return;
    float *k = calloc((size_t)n * H * D, sizeof *k), *v = calloc((size_t)n * H * D, sizeof *v);
    double *w = malloc(MAXP * 2 * sizeof *w);
    int *kp = malloc(MAXP * 2 * sizeof *kp);
    r->n_obs = 0;
    for (int l = 0; l < p->n_layer; l++) {
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                float *kr = k + ((size_t)t * H + h) * D, *vr = v + ((size_t)t * H + h) * D;
                kr[0] = (float)pos[t];
                vr[0] = (float)(l * 16 + h);
                vr[1] = (float)pos[t];
            }
        r->be->ops->kv_store(r->be, kv_cache_slots(r->kv, l), k, v, pos, n, H, D);
        int stride = 0;
        float *pr = kv_cache_probs(r->kv, l, &stride);
        if (!pr) continue;
        r->n_obs++;
        const struct kv_layer_view *vw = kv_cache_view(r->kv, l);
        for (int hq = 0; hq < p->n_head; hq++) {
            int h = hq / ng, ns = view_n_slots(vw, h);
            double *sc = rig_score(r, l, h);
            for (int j = 0; j < ns; j++)
                kp[j] = view_pos(vw, h, j);
            for (int i = 0; i < n; i++) {
                float *row = pr + ((size_t)hq * n + i) * stride;
                memset(row, 0, sizeof *row * (size_t)stride);
                double sum = 0;
                for (int j = 0; j < ns; j++) {
                    w[j] = kp[j] >= 0 && kp[j] <= pos[i] ? f(r, l, hq, pos[i], kp[j]) : 0.0;
                    sum += w[j];
                }
                if (sum <= 0) // nothing the map wants is held: the query attends to itself
                    for (int j = 0; j < ns; j++)
                        w[j] = kp[j] == pos[i], sum += w[j];
                for (int j = 0; j < ns; j++) {
                    row[j] = (float)(w[j] / sum);
                    if (kp[j] >= 0) sc[kp[j]] += (double)row[j] / ng;
                }
            }
        }
        CHECK(kv_cache_observe(r->kv, l, pos) == 0);
    }
    CHECK(kv_cache_commit(r->kv, phase) == 0);
    r->n_past += n;
    free(k);
    free(v);
    free(w);
    free(kp);
}

// ---- the constructed maps -------------------------------------------------------------------------
// Punctuation at positions 8k+7. Layer 0: h0 sink, h1 punct, h2 band, h3 uniform. Layer 1: h0 GQA
// (q0 sink, q1 0.9 sink + 0.1 previous token), h1 heavy hitters (positions 1, 2, 3), h2 GQA (q0 punct,
// q1 sink), h3 band. Layer 2: h0 self, h1 GQA (q0 self, q1 sink), h2 0.97 self + 0.03 on position 1,
// h3 uniform. Layer 3: h0 previous token, the rest uniform. While decoding (qpos >= L_PROMPT) the heavy head
// also spreads 10% over all keys with distinct weights, so that accumulated scores have no ties.

static double jit(int pos) { return (double)((uint32_t)(pos + 1) * 2654435761u % 1000u) / 1000.0; }

static double m_sink(int kpos) { return kpos == 0; }

static double m_punct(const struct rig *r, int qpos, int kpos) {
    if (qpos < 7) return kpos == 0;
    int npv = 0;
    for (int p = 0; p <= qpos; p++)
        npv += (r->flags[p] & KV_TOK_PUNCT) != 0;
    if (r->flags[kpos] & KV_TOK_PUNCT) return 0.96 / npv;
    return kpos == 1 ? 0.04 : 0.0;
}

static double m_band(int qpos, int kpos) { return kpos >= qpos - 3 ? 1.0 + 0.5 * jit(kpos) : 0.0; }

static double m_heavy(int qpos, int kpos) {
    if (qpos < 4) return kpos == 0;
    double m = kpos == 1 ? 0.5 : kpos == 2 ? 0.3 : kpos == 3 ? 0.2 : 0.0;
    if (qpos < L_PROMPT) return m;
    return 0.9 * m + 0.1 * (0.1 + jit(kpos)) / (qpos + 1);
}

static double map_mix(const struct rig *r, int layer, int hq, int qpos, int kpos) {
    int h = hq / 2, q = hq % 2;
    if (layer == 0) {
        if (h == 0) return m_sink(kpos);
        if (h == 1) return m_punct(r, qpos, kpos);
        if (h == 2) return m_band(qpos, kpos);
        return 1.0;
    }
    if (layer == 3) { // h0: a previous-token head (0.9+ on the token before, growing so no two tie)
        if (h > 0) return 1.0;
        if (qpos == 0) return 1.0;
        return (kpos == qpos - 1 ? 0.9 + 0.0005 * qpos : 0.0) + (kpos == 0 ? 0.1 - 0.0005 * qpos : 0.0);
    }
    if (layer == 2) { // the query's own token is held when it attends: every candidate recovers it
        if (h == 0) return kpos == qpos;
        if (h == 1) return q == 0 ? kpos == qpos : m_sink(kpos);
        if (h == 2) return (kpos == qpos ? 0.97 : 0.0) + (kpos == 1 ? 0.03 : 0.0);
        return 1.0;
    }
    if (h == 0) {
        if (q == 0) return m_sink(kpos);
        return (kpos == 0 ? 0.9 : 0.0) + (kpos == qpos - 1 ? 0.1 : 0.0) + (qpos == 0);
    }
    if (h == 1) return m_heavy(qpos, kpos);
    if (h == 2) return q == 0 ? m_punct(r, qpos, kpos) : m_sink(kpos);
    return m_band(qpos, kpos);
}

static void prompt_flags(uint8_t *fl, int from, int n) {
    for (int i = 0; i < n; i++) {
        int p = from + i;
        fl[i] = 0;
        if (p % 8 == 7) fl[i] |= KV_TOK_PUNCT;
        if (p >= L_PROMPT && p % 20 == 13) fl[i] |= KV_TOK_SPECIAL; // control tokens among the generated ones
    }
}

#define C_S KV_C_SPECIAL
#define C_SP (KV_C_SPECIAL | KV_C_PUNCT)
#define C_SPF (KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ)
#define C_SPFL (KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL)

// Recovery of S+P+F on the heavy-hitter head, by hand. At row i the cache holds what the eviction after
// step i-1 kept: the top k = floor(r_f * i) older tokens by the scores of rows 0..i-1. Rows 0-3 attend the
// sink (1.0); later rows put 0.5/0.3/0.2 on positions 1/2/3, which rank 2nd/3rd/4th behind the sink
// (score 4; position 1 ties it at row 12, when k = 3 already holds both), so a row recovers 0.5 when k >= 2,
// +0.3 when k >= 3, +0.2 when k >= 4.
static double heavy_expected(float r_f) {
    double sum = 0;
    for (int i = 0; i < L_PROMPT; i++) {
        if (i < 4) {
            sum += 1.0;
            continue;
        }
        int k = (int)(r_f * (float)i);
        sum += (k >= 2 ? 0.5 : 0) + (k >= 3 ? 0.3 : 0) + (k >= 4 ? 0.2 : 0);
    }
    return sum / L_PROMPT;
}

// The punct head's S+P recovery: rows 0-6 attend the sink only (1.0), later rows 0.96 on punctuation and
// 0.04 on position 1, which S+P does not keep.
static double punct_expected(void) { return (7.0 + (L_PROMPT - 7) * 0.96) / L_PROMPT; }
// The GQA head's S recovery for q1: rows 0 and 1 recover 1.0, later rows 0.9 (the previous token is lost).
static double gqa_q1_expected(void) { return (2.0 + (L_PROMPT - 2) * 0.9) / L_PROMPT; }

static void run_prompt(struct rig *r, const int *chunks, int n_chunks) {
    uint8_t fl[MAXP];
    kv_cache_begin_prompt(r->kv, L_PROMPT);
    int at = 0;
    for (int c = 0; c < n_chunks; c++) {
        prompt_flags(fl, at, chunks[c]);
        rig_feed(r, chunks[c], fl, c == n_chunks - 1 ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK, map_mix);
        at += chunks[c];
    }
}

static void test_profile_choices(struct kn_backend *be) {
    struct rig r;
    if (rig_init(&r, be, 4, 4, 8, KV_POLICY_FASTGEN, 0.95f, 16)) return;
    int one[] = {L_PROMPT};
    run_prompt(&r, one, 1);
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    CHECK(kv_cache_stats(r.kv, &s) == 0);
    const uint32_t want[12] = {C_S,  C_SP,   C_SPFL, KV_C_FULL, C_S, C_SPF,
                               C_SP, C_SPFL, C_S,    C_S,       C_S, KV_C_FULL};
    double sp = punct_expected(), q1 = gqa_q1_expected(), hv = heavy_expected(r.p.heavy_ratio);
    double self97 = (2.0 + (L_PROMPT - 2) * 0.97) / L_PROMPT; // rows 0 and 1 attend only themselves
    const double rec[12] = {1, sp, 1, 1, (1 + q1) / 2, hv, (sp + 1) / 2, 1, 1, 1, self97, 1};
    const double rmin[12] = {1, sp, 1, 1, q1, hv, sp, 1, 1, 1, self97, 1};
    const char *what[12] = {"sink",           "punct", "band", "uniform",       "GQA sink/prev", "heavy",
                            "GQA punct/sink", "band",  "self", "GQA self/sink", "self 0.97",     "uniform"};
    // a previous-token head needs LOCAL: the token it attends has never been attended before, so no
    // heavy-hitter set the cache could hold when the query arrives contains it (a profiler that let the
    // query's own row into the scores first would pick S+P+F here)
    CHECK_MSG(s.heads[12].comps == C_SPFL, "previous-token head: %s", kv_comps_name(s.heads[12].comps));
    CHECK_NEAR(s.heads[12].recovery, 1.0, 2e-6);
    for (int i = 0; i < 12; i++) {
        CHECK_MSG(s.heads[i].comps == want[i], "%s head: %s, want %s", what[i],
                  kv_comps_name(s.heads[i].comps), kv_comps_name(want[i]));
        CHECK_NEAR(s.heads[i].recovery, rec[i], 2e-6);
        CHECK_NEAR(s.heads[i].recovery_min, rmin[i], 2e-6);
    }
    // the hand numbers themselves sit where the test means them to: just above and below T
    CHECK((1 + q1) / 2 >= 0.95 && q1 < 0.95 && hv >= 0.95 && sp >= 0.95);
    CHECK_EQ_INT(s.n_heads_by_comps[C_S], 5);
    CHECK_EQ_INT(s.n_heads_by_comps[C_SP], 2);
    CHECK_EQ_INT(s.n_heads_by_comps[KV_C_FULL], 5);

    // the same prompt in three micro-batches profiles to the same choices and numbers
    struct rig r2;
    if (rig_init(&r2, be, 3, 4, 8, KV_POLICY_FASTGEN, 0.95f, 16) == 0) {
        int three[] = {50, 50, 28};
        run_prompt(&r2, three, 3);
        struct kv_stats s2;
        memset(&s2, 0, sizeof s2);
        CHECK(kv_cache_stats(r2.kv, &s2) == 0);
        for (int i = 0; i < 12; i++) {
            CHECK_EQ_INT(s2.heads[i].comps, s.heads[i].comps);
            CHECK_NEAR(s2.heads[i].recovery, s.heads[i].recovery, 1e-6);
            CHECK_NEAR(s2.heads[i].recovery_min, s.heads[i].recovery_min, 1e-6);
            CHECK_EQ_INT(s2.heads[i].retained, s.heads[i].retained);
        }
        kv_stats_release(&s2);
    }
    rig_free(&r2);
    kv_stats_release(&s);
    rig_free(&r);

    // T = 1: every head full, nothing evicted; T = 0.97 moves the first GQA head off "special"
    float ts[2] = {1.0f, 0.97f};
    for (int t = 0; t < 2; t++) {
        if (rig_init(&r, be, 3, 4, 8, KV_POLICY_FASTGEN, ts[t], 16)) return;
        run_prompt(&r, one, 1);
        memset(&s, 0, sizeof s);
        CHECK(kv_cache_stats(&*r.kv, &s) == 0);
        if (t == 0) {
            CHECK_EQ_INT(s.n_heads_by_comps[KV_C_FULL], 12);
            CHECK_EQ_INT(s.retained_tokens, 12 * L_PROMPT);
            for (int i = 0; i < 12; i++)
                CHECK_NEAR(s.heads[i].recovery, 1.0, 0);
        } else {
            CHECK(s.heads[4].comps != C_S);
            CHECK(s.heads[0].comps == C_S && s.heads[5].comps == C_SPFL); // heavy: 0.966 < 0.97
            CHECK(s.heads[10].comps == C_S && s.heads[8].comps == C_S);   // self 0.9703 >= 0.97
        }
        kv_stats_release(&s);
        rig_free(&r);
    }
}

// ---- retained sets while decoding -----------------------------------------------------------------

struct expect {
    uint8_t must[MAXP], may[MAXP];
};

// What head (layer, h) must / may hold after a commit, given what it held before (plus the new tokens):
// the union of its components with local window local_w and k heavy hitters (the top k held tokens by
// accumulated score; keys within 1e-5 of the k-th score may go either way, ties being broken by slot
// order), and with KIVI the staging window of the `staging` newest tokens.
static void expect_after(const struct rig *r, int layer, int h, uint32_t comps, int local_w, int k,
                         int staging, const uint8_t *held_before, struct expect *e) {
    int newest = r->n_past - 1;
    const double *sc = rig_score(r, layer, h);
    double thr = -1e300;
    int tie = 1;
    if (comps & KV_C_FREQ) { // k-th largest held score (partial selection sort: n is small)
        double top[MAXP];
        int n = 0;
        for (int p = 0; p <= newest; p++)
            if (held_before[p]) top[n++] = sc[p];
        for (int i = 0; i < n && i <= k; i++)
            for (int j = i + 1; j < n; j++)
                if (top[j] > top[i]) {
                    double t = top[i];
                    top[i] = top[j];
                    top[j] = t;
                }
        thr = k <= 0 ? 1e300 : k >= n ? -1e300 : top[k - 1];
        if (k > 0 && k < n && top[k - 1] - top[k] > 1e-5) tie = 0; // a clear gap below the k-th score
    }
    for (int p = 0; p < MAXP; p++) {
        e->must[p] = e->may[p] = 0;
        if (p > newest || !held_before[p]) continue;
        int keep = (comps & KV_C_FULL) || ((comps & KV_C_SPECIAL) && (r->flags[p] & KV_TOK_SPECIAL)) ||
                   ((comps & KV_C_PUNCT) && (r->flags[p] & KV_TOK_PUNCT)) ||
                   ((comps & KV_C_LOCAL) && p > newest - local_w) || p > newest - staging;
        int f_must = (comps & KV_C_FREQ) && (tie ? sc[p] > thr + 1e-5 : sc[p] >= thr);
        int f_may = (comps & KV_C_FREQ) && (tie ? sc[p] >= thr - 1e-5 : sc[p] >= thr);
        e->must[p] = (uint8_t)(keep || f_must);
        e->may[p] = (uint8_t)(keep || f_may);
    }
}

// Compares what each head holds after a commit with expect_after; counts into the tallies.
struct tally {
    int bad_must, bad_may, over_budget, bad_budget, bad_data, steps, exact_steps;
};

static void check_heads(struct rig *r, const struct kv_stats *s, uint8_t (*held)[MAXP], int local_w,
                        int heavy_k, struct tally *t) {
    struct expect *e = malloc(sizeof *e);
    if (!e) return;
    int staging = r->p.bits != 16 ? r->p.residual : 0;
    for (int i = 0; i < r->p.n_layer * r->p.n_head_kv; i++) {
        int l = i / r->p.n_head_kv, h = i % r->p.n_head_kv;
        uint32_t comps = s->heads[i].comps;
        int k = heavy_k > 0 ? heavy_k : (int)(r->p.heavy_ratio * (float)r->n_past);
        expect_after(r, l, h, comps, local_w, k, staging, held[i], e);
        int n = held_map(r, l, h, held[i]);
        int exact = 1;
        for (int p = 0; p < r->n_past; p++) {
            if (e->must[p] && !held[i][p]) t->bad_must++;
            if (!e->may[p] && held[i][p]) t->bad_may++;
            if (e->must[p] != e->may[p]) exact = 0;
        }
        if (getenv("KVTEST_VERBOSE") && !exact) {
            const double *sc = rig_score(r, l, h);
            fprintf(stderr, "head %d comps %s k %d n_past %d:", i, kv_comps_name(comps), k, r->n_past);
            for (int p = 0; p < r->n_past; p++)
                if (e->must[p] != e->may[p]) fprintf(stderr, " %d:%.9f", p, sc[p]);
            fprintf(stderr, "\n");
        }
        CHECK_EQ_INT(s->heads[i].retained, n);
        if (!(comps & KV_C_FULL)) { // specials + puncts + local window + heavy hitters (+ KIVI staging)
            int64_t b = ((comps & KV_C_SPECIAL) ? r->n_special : 0) +
                        ((comps & KV_C_PUNCT) ? r->n_punct : 0) + ((comps & KV_C_LOCAL) ? local_w : 0) +
                        ((comps & KV_C_FREQ) ? k : 0) + staging;
            if (n > b) t->over_budget++;
            if (s->heads[i].budget != b) t->bad_budget++;
        } else if (s->heads[i].budget != -1) {
            t->bad_budget++;
        }
        if (r->p.bits == 16) t->bad_data += check_contents(r, l, h);
        if (comps & KV_C_FREQ) {
            t->steps++;
            t->exact_steps += exact;
        }
    }
    free(e);
}

static void report(const struct tally *t, const char *what) {
    CHECK_MSG(t->bad_must == 0, "%s: %d tokens the policy keeps were evicted", what, t->bad_must);
    CHECK_MSG(t->bad_may == 0, "%s: %d tokens the policy drops are still held", what, t->bad_may);
    CHECK_MSG(t->over_budget == 0, "%s: %d head-steps over budget", what, t->over_budget);
    CHECK_MSG(t->bad_budget == 0, "%s: %d head-steps where kv_cache_stats reports another budget", what,
              t->bad_budget);
    CHECK_MSG(t->bad_data == 0, "%s: %d held slots lost their K/V in compaction", what, t->bad_data);
}

static void test_decode_retention(struct kn_backend *be, int bits) {
    struct rig r;
    if (rig_init(&r, be, 3, 4, 8, KV_POLICY_FASTGEN, 0.95f, bits)) return;
    int nh = 12;
    uint8_t(*held)[MAXP] = calloc((size_t)nh, MAXP);
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < nh; i++)
        for (int p = 0; p < L_PROMPT; p++)
            held[i][p] = 1;
    struct tally t;
    memset(&t, 0, sizeof t);
    int special_exact = 1, punct_exact = 1, local_ok = 1, heavy_exact = 0, heavy_steps = 0, min_band = MAXP;
    int local_w = (int)ceilf(r.p.local_ratio * (float)L_PROMPT);
    int one[] = {L_PROMPT};
    for (int step = -1; step < 80; step++) {
        if (step < 0) {
            run_prompt(&r, one, 1);
        } else {
            uint8_t fl;
            prompt_flags(&fl, r.n_past, 1);
            for (int i = 0; i < nh; i++)
                held[i][r.n_past] = 1;
            rig_feed(&r, 1, &fl, KV_PHASE_DECODE, map_mix);
        }
        CHECK(kv_cache_stats(r.kv, &s) == 0);
        int before = t.exact_steps, before_n = t.steps;
        check_heads(&r, &s, held, local_w, 0, &t);
        // base-policy rules, stated directly (without KIVI, whose staging window keeps the newest tokens)
        int newest = r.n_past - 1;
        for (int i = 0; i < nh; i++) {
            uint32_t comps = s.heads[i].comps;
            for (int p = 0; p < r.n_past; p++) {
                int sp = (r.flags[p] & KV_TOK_SPECIAL) != 0, pu = (r.flags[p] & KV_TOK_PUNCT) != 0;
                int stage = bits != 16 && p > newest - r.p.residual;
                if (comps == C_S && held[i][p] != (sp || stage)) special_exact = 0;
                if (comps == C_SP && held[i][p] != (sp || pu || stage)) punct_exact = 0;
                if ((comps & KV_C_LOCAL) && p > newest - local_w && !held[i][p]) local_ok = 0;
            }
        }
        if (step >= 1) { // the heavy head (layer 1 head 1) has distinct scores after one decode row
            heavy_steps++;
            heavy_exact += t.exact_steps - before == t.steps - before_n;
        }
        if (s.heads[2].retained < min_band) min_band = s.heads[2].retained;
    }
    const char *what = bits == 16 ? "fastgen" : "fastgen+kivi";
    report(&t, what);
    CHECK_MSG(special_exact, "%s: a special head holds more or less than the specials", what);
    CHECK_MSG(punct_exact, "%s: a special+punct head holds more or less than specials and puncts", what);
    CHECK_MSG(local_ok, "%s: a local head lost a token of its window", what);
    if (bits == 16) // with distinct scores the heavy-hitter sets are exact (no tie left to slot order)
        CHECK_MSG(heavy_exact == heavy_steps, "exact at %d of %d steps", heavy_exact, heavy_steps);
    // the sink head holds the specials: position 0 and the control tokens at 133, 153, 173, 193
    CHECK_EQ_INT(r.n_special, 5);
    if (bits == 16) CHECK_EQ_INT(s.heads[0].retained, 5);
    // the band head's window slides: it never held all 208 tokens again
    CHECK(s.heads[2].retained < r.n_past * 3 / 4 && min_band >= local_w);
    CHECK(s.retained_tokens < nh * r.n_past / 2);
    kv_stats_release(&s);
    free(held);
    rig_free(&r);
}

// H2O = frequent + recent with a fixed k: the frequent part drops the lowest accumulated score.
static double map_distinct(const struct rig *r, int layer, int hq, int qpos, int kpos) {
    (void)r, (void)layer;
    return 1.0 + 3.0 * jit(kpos * 7 + hq) + (kpos == qpos ? 1.0 : 0.0);
}

static void test_frequent(struct kn_backend *be) {
    struct rig r;
    memset(&r, 0, sizeof r);
    r.be = be;
    kv_cache_params_default(&r.p);
    r.p.n_layer = 1;
    r.p.n_head_kv = 1;
    r.p.n_head = 2;
    r.p.head_dim = 32;
    r.p.n_ctx = MAXP;
    r.p.policy = KV_POLICY_H2O;
    r.p.budget = 16; // 8 heavy hitters + 8 recent
    char err[256];
    r.kv = kv_cache_init(be, &r.p, err, sizeof err);
    r.score = calloc(MAXP, sizeof *r.score);
    CHECK_MSG(r.kv != NULL, "%s", err);
    if (!r.kv || !r.score) {
        rig_free(&r);
        return;
    }
    uint8_t held[1][MAXP];
    memset(held, 0, sizeof held);
    for (int p = 0; p < 32; p++)
        held[0][p] = 1;
    struct tally t;
    memset(&t, 0, sizeof t);
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    int dropped_lowest = 1;
    kv_cache_begin_prompt(r.kv, 32);
    rig_feed(&r, 32, NULL, KV_PHASE_PROMPT_END, map_distinct);
    CHECK(kv_cache_stats(r.kv, &s) == 0);
    check_heads(&r, &s, held, 8, 8, &t);
    for (int step = 0; step < 40; step++) {
        held[0][r.n_past] = 1;
        uint8_t before[MAXP];
        memcpy(before, held[0], MAXP);
        rig_feed(&r, 1, NULL, KV_PHASE_DECODE, map_distinct);
        CHECK(kv_cache_stats(r.kv, &s) == 0);
        check_heads(&r, &s, held, 8, 8, &t);
        CHECK_EQ_INT(s.heads[0].retained, 16);
        // the one token that left is the new window leaver or the lowest-scored old heavy hitter
        const double *sc = rig_score(&r, 0, 0);
        int newest = r.n_past - 1, gone = -1, n_gone = 0;
        for (int p = 0; p <= newest; p++)
            if (before[p] && !held[0][p]) gone = p, n_gone++;
        CHECK_EQ_INT(n_gone, 1);
        for (int p = 0; p <= newest - 8; p++)
            if (held[0][p] && gone >= 0 && sc[p] < sc[gone]) dropped_lowest = 0;
    }
    CHECK(dropped_lowest);
    CHECK_MSG(t.exact_steps == t.steps && t.steps == 41, "exact %d of %d", t.exact_steps, t.steps);
    report(&t, "h2o");
    kv_stats_release(&s);
    rig_free(&r);
}

// ---- random-weight models: T = 1 is the full cache, bit for bit -------------------------------------

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// Runs the same prompt (40 tokens) and 30 greedy steps (the full cache's pick fed to every cache) through
// caches made with each of `pols`; returns per cache the steps whose logits differ from cache 0 bit-wise.
static void run_lockstep(struct model *m, struct kn_backend *be, const struct kv_cache_params *pols, int n_c,
                         int *n_diff, int64_t *retained) {
    const struct model_config *c = model_get_config(m);
    char err[256];
    struct kv_cache *kv[4];
    float *lg[4];
    for (int i = 0; i < n_c; i++) {
        kv[i] = kv_cache_init(be, &pols[i], err, sizeof err);
        CHECK_MSG(kv[i] != NULL, "%s", err);
        lg[i] = malloc((size_t)c->n_vocab * sizeof(float));
        n_diff[i] = 0;
    }
    for (int i = 0; i < n_c; i++)
        if (!kv[i]) goto done;
    int32_t tok[40], pos[40];
    uint8_t fl[40];
    uint64_t x = 0x1234567;
    for (int i = 0; i < 40; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = i == 0 ? 1 : 3 + (int32_t)((x >> 33) % (uint64_t)(c->n_vocab - 3));
        pos[i] = i;
        fl[i] = (uint8_t)(tok[i] % 5 == 0 ? KV_TOK_PUNCT : 0);
    }
    for (int i = 0; i < n_c; i++) {
        struct model_batch b = {
            .tokens = tok, .pos = pos, .flags = fl, .n = 40, .phase = KV_PHASE_PROMPT_END};
        CHECK_MSG(model_forward(m, kv[i], &b, lg[i], err, sizeof err) == 0, "%s", err);
        if (i && memcmp(lg[i], lg[0], (size_t)c->n_vocab * sizeof(float))) n_diff[i]++;
    }
    for (int step = 0; step < 30; step++) {
        int32_t t = argmax(lg[0], c->n_vocab), p = 40 + step;
        uint8_t f = (uint8_t)(t % 5 == 0 ? KV_TOK_PUNCT : 0);
        for (int i = 0; i < n_c; i++) {
            struct model_batch b = {.tokens = &t, .pos = &p, .flags = &f, .n = 1, .phase = KV_PHASE_DECODE};
            CHECK_MSG(model_forward(m, kv[i], &b, lg[i], err, sizeof err) == 0, "%s", err);
            if (i && memcmp(lg[i], lg[0], (size_t)c->n_vocab * sizeof(float))) n_diff[i]++;
        }
    }
    for (int i = 0; i < n_c; i++) {
        struct kv_stats s;
        memset(&s, 0, sizeof s);
        kv_cache_stats(kv[i], &s);
        retained[i] = s.retained_tokens;
        kv_stats_release(&s);
    }
done:
    for (int i = 0; i < n_c; i++) {
        kv_cache_free(kv[i]);
        free(lg[i]);
    }
}

static void test_lossless(struct kn_backend *be, const char *dir, const char *preset) {
    struct synth_spec sp;
    CHECK(synth_preset(&sp, preset) == 0);
    sp.w_std = 0.08f; // peakier attention than the default, so that T < 1 does evict
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, preset);
    CHECK_MSG(synth_write_gguf(&sp, path, err, sizeof err) == 0, "%s", err);
    struct model *m = model_load(path, be, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (!m) return;
    struct kv_cache_params kp[3];
    for (int i = 0; i < 3; i++) {
        const struct model_config *c = model_get_config(m);
        kv_cache_params_default(&kp[i]);
        kp[i].n_layer = c->n_layer;
        kp[i].n_head_kv = c->n_head_kv;
        kp[i].n_head = c->n_head;
        kp[i].head_dim = c->head_dim;
        kp[i].n_ctx = 128;
        kp[i].layer_window = model_layer_windows(m);
    }
    kp[1].policy = kp[2].policy = KV_POLICY_FASTGEN;
    kp[1].recovery = 1.0f;
    kp[2].recovery = 0.5f;
    int n_diff[3];
    int64_t ret[3];
    run_lockstep(m, be, kp, 3, n_diff, ret);
    CHECK_MSG(n_diff[1] == 0, "%s: fastgen T=1 differs from the full cache at %d of 31 steps", preset,
              n_diff[1]);
    CHECK_EQ_INT(ret[1], ret[0]);
    // the control: the same comparison does see a compressed cache
    CHECK_MSG(n_diff[2] > 0 && ret[2] < ret[0], "%s: T=0.5 differs at %d steps, holds %lld of %lld", preset,
              n_diff[2], (long long)ret[2], (long long)ret[0]);
    model_free(m);
    unlink(path);
}

// ---- the eval harness on a random-weight model ------------------------------------------------------

// `kvchat eval`'s session (app/eval.h) on the built-in text: T = 1 scores exactly like the full cache, a low
// T does not, and the passkey trials run; numbers are the session's, not recomputed here.
static void test_eval_session(const char *dir) {
    struct synth_spec sp;
    CHECK(synth_preset(&sp, "tiny") == 0);
    sp.w_std = 0.08f;
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/eval.gguf", dir);
    CHECK_MSG(synth_write_gguf(&sp, path, err, sizeof err) == 0, "%s", err);
    struct app_params p;
    app_params_default(&p);
    p.mode = APP_MODE_EVAL;
    p.model_path = path;
    p.device = APP_DEVICE_CPU;
    p.n_threads = 2;
    p.eval_tokens = 160;
    struct eval_session *s = eval_session_open(&p, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    if (s) {
        struct eval_info in;
        eval_session_info(s, &in);
        CHECK_EQ_INT(in.n_tok, 160);
        CHECK_EQ_INT(in.n_prompt, 40); // a quarter of the text is the prompt
        const struct eval_row *full = eval_session_full(s);
        CHECK(full->ppl > 1.0 && full->ppl == full->ppl_full && full->top1_agree == 1.0);
        struct app_params c = p;
        c.kv_policy = KV_POLICY_FASTGEN;
        c.recovery = 1.0f;
        struct eval_row r;
        CHECK_MSG(eval_session_run(s, &c, &r, err, sizeof err) == 0, "%s", err);
        CHECK_MSG(r.ppl == r.ppl_full && r.top1_agree == 1.0, "T=1: ppl %.9g vs %.9g, top-1 %.4f", r.ppl,
                  r.ppl_full, r.top1_agree);
        CHECK_EQ_INT(r.kv.retained_tokens, full->kv.retained_tokens);
        kv_stats_release(&r.kv);
        c.recovery = 0.5f;
        CHECK_MSG(eval_session_run(s, &c, &r, err, sizeof err) == 0, "%s", err);
        CHECK_MSG(r.ppl != r.ppl_full && r.kv_saving > full->kv_saving &&
                      r.kv.retained_tokens < full->kv.retained_tokens,
                  "T=0.5: ppl %.9g vs %.9g, saving %.3f vs %.3f", r.ppl, r.ppl_full, r.kv_saving,
                  full->kv_saving);
        CHECK(r.top1_agree > 0.0 && r.top1_agree <= 1.0);
        kv_stats_release(&r.kv);
        eval_session_close(s);
    }
    p.task = "passkey";
    p.eval_tokens = 120;
    s = eval_session_open(&p, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    if (s) {
        struct eval_info in;
        eval_session_info(s, &in);
        CHECK(in.passkey && in.n_prompt == 15 && in.n_tok <= 120 && in.n_tok > 90);
        const struct eval_row *full = eval_session_full(s);
        CHECK_EQ_INT(full->pk_n, 15);
        CHECK(full->pk_ok >= 0 && full->pk_ok <= 15);
        eval_session_close(s);
    }
    unlink(path);
}

int main(void) {
    char err[256];
    struct kn_backend *be = kn_cpu_init(2, err, sizeof err);
    CHECK_MSG(be != NULL, "%s", err);
    if (!be) return test_done();
    test_profile_choices(be);
    test_decode_retention(be, 16);
    test_decode_retention(be, 4);
    test_frequent(be);
    char dir[] = "/tmp/kvchat_policy_XXXXXX";
    if (mkdtemp(dir)) {
        test_lossless(be, dir, "tiny");
        test_lossless(be, dir, "tiny-gemma3");
        test_eval_session(dir);
        rmdir(dir);
    } else {
        CHECK_MSG(0, "cannot make a temporary directory");
    }
    kn_free(be);
    return test_done();
}
