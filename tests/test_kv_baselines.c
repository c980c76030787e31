// tests/test_kv_baselines.c — H2O (heavy hitters + recent window at a fixed budget), StreamingLLM (sinks + window),
// and every comparison policy against its budget over long decodes, with KIVI 16/4/2 bits and the stats.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"
#include "tests/kv_drive.h"
#include "tests/test.h"

#define MAXP 2048

static void params(struct kv_cache_params *p, int policy, int L, int H, int nq, int budget, int bits) {
    kv_cache_params_default(p);
    p->n_layer = L;
    p->n_head_kv = H;
    p->n_head = nq;
    p->head_dim = 8;
    p->n_ctx = MAXP;
    p->policy = policy;
    p->budget = budget;
    p->bits = bits;
    p->residual = 32;
}

// ---- H2O -----------------------------------------------------------------------------------------

// Weights: a per-position base (distinct values), a few positions always heavy, optionally recent-heavy.
struct h2o_att {
    int recent_heavy;
};
static float base_w(int kpos) { return 1.0f + (float)(kvd_hash((uint32_t)kpos * 2654435761u) % 1000003u) * 1e-5f; }
static float h2o_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)layer, (void)hq;
    const struct h2o_att *a = ud;
    float w = base_w(kpos + 1000 * kvh);
    if (kpos == 3 || kpos == 10 || kpos == 17) w *= 40.0f;
    if (a->recent_heavy && kpos >= qpos - 3) w *= 200.0f;
    return w;
}

// The test's own accumulated scores: every row's normalised weight over what the head held at that row.
struct shadow {
    double score[MAXP];
    int32_t held[MAXP];
    int n_held;
};

static void shadow_rows(struct shadow *sh, const struct h2o_att *a, int kvh, int q0, int n) {
    for (int i = 0; i < n; i++) {
        int q = q0 + i;
        double sum = 0.0;
        for (int j = 0; j < sh->n_held; j++)
            if (sh->held[j] <= q) sum += h2o_fn((void *)a, 0, kvh, 0, q, sh->held[j]);
        for (int j = 0; j < sh->n_held; j++)
            if (sh->held[j] <= q) sh->score[sh->held[j]] += h2o_fn((void *)a, 0, kvh, 0, q, sh->held[j]) / sum;
    }
}

// After a commit: the head holds the `local` newest tokens and, among the older ones, the `heavy` with the
// largest accumulated scores (up to float rounding) — exactly `local + heavy` once the context is longer.
static int check_h2o_step(struct shadow *sh, const int32_t *after, int n_after, int newest, int heavy, int local) {
    int bad = 0;
    int n_cand = 0;
    double min_kept = 1e300, max_evicted = -1.0;
    for (int j = 0; j < sh->n_held; j++) {
        int p = sh->held[j];
        int recent = p > newest - local;
        int kept = kvd_has(after, n_after, p);
        if (recent) {
            bad += !kept;
            continue;
        }
        n_cand++;
        if (kept && sh->score[p] < min_kept) min_kept = sh->score[p];
        if (!kept && sh->score[p] > max_evicted) max_evicted = sh->score[p];
    }
    int n_recent = newest + 1 < local ? newest + 1 : local;
    int want = n_recent + (n_cand < heavy ? n_cand : heavy);
    if (n_after != want) bad++;
    if (max_evicted > min_kept * (1.0 + 1e-5) + 1e-9) bad++;
    return bad;
}

static void test_h2o(int recent_heavy, int nq, int ubatch) {
    struct kv_cache_params p;
    params(&p, KV_POLICY_H2O, 1, 1, nq, 16, 16);
    struct h2o_att a = {recent_heavy};
    struct kvd d;
    if (kvd_init(&d, &p, h2o_fn, &a)) {
        CHECK(0);
        return;
    }
    static struct shadow sh;
    memset(&sh, 0, sizeof sh);
    int32_t after[MAXP];
    int bad = 0, lost_heavy = 0;
    // prompt of 100 tokens (in micro-batches), then 300 decode steps
    kv_cache_begin_prompt(d.kv, 100);
    for (int i = 0; i < 100; i += ubatch) {
        int m = 100 - i < ubatch ? 100 - i : ubatch;
        for (int t = 0; t < m; t++) sh.held[sh.n_held++] = i + t;
        shadow_rows(&sh, &a, 0, i, m);
        CHECK_EQ_INT(kvd_batch(&d, i, m, NULL, i + m == 100 ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK), 0);
        int n = kvd_held(&d, 0, 0, after, MAXP);
        if (i + m < 100) {
            bad += n != i + m; // no eviction inside a prompt
        } else {
            bad += check_h2o_step(&sh, after, n, 99, 8, 8);
        }
        memcpy(sh.held, after, (size_t)n * sizeof *after);
        sh.n_held = n;
    }
    for (int step = 0; step < 300; step++) {
        int q = 100 + step;
        sh.held[sh.n_held++] = q;
        shadow_rows(&sh, &a, 0, q, 1);
        CHECK_EQ_INT(kvd_batch(&d, q, 1, NULL, KV_PHASE_DECODE), 0);
        int n = kvd_held(&d, 0, 0, after, MAXP);
        bad += check_h2o_step(&sh, after, n, q, 8, 8);
        if (!recent_heavy) lost_heavy += !kvd_has(after, n, 3) + !kvd_has(after, n, 10) + !kvd_has(after, n, 17);
        memcpy(sh.held, after, (size_t)n * sizeof *after);
        sh.n_held = n;
    }
    CHECK_MSG(bad == 0, "h2o (recent_heavy %d, nq %d, ubatch %d): %d bad steps", recent_heavy, nq, ubatch, bad);
    CHECK_EQ_INT(lost_heavy, 0);
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    CHECK_EQ_INT(st.heads[0].budget, 16);
    CHECK_EQ_INT(st.heads[0].retained, 16);
    CHECK_EQ_INT(st.heads[0].comps, KV_C_FREQ | KV_C_LOCAL);
    kv_stats_release(&st);
    kvd_free(&d);
}

// ---- StreamingLLM ----------------------------------------------------------------------------------

static float uniform_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)ud, (void)layer, (void)kvh, (void)hq, (void)qpos;
    return base_w(kpos);
}

// Holds exactly the first `sinks` positions and the newest budget - sinks (or the KIVI staging window when
// that is wider), in every layer and head, at the prompt's end and at every decode step.
static void test_local(int sinks, int budget, int bits, int L, int H, int nq) {
    struct kv_cache_params p;
    params(&p, KV_POLICY_LOCAL, L, H, nq, budget, bits);
    p.sink_tokens = sinks;
    struct kvd d;
    if (kvd_init(&d, &p, uniform_fn, NULL)) {
        CHECK(0);
        return;
    }
    int local = budget - sinks, win = local;
    if (bits != 16 && p.residual > win) win = p.residual;
    CHECK_EQ_INT(kvd_prompt(&d, 0, 150, 64, NULL), 0);
    int32_t held[MAXP];
    int bad = 0;
    for (int step = 0; step <= 250; step++) {
        int newest = 149 + step;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) {
                int n = kvd_held(&d, l, h, held, MAXP);
                bad += n != sinks + win;
                for (int s = 0; s < sinks; s++) bad += !kvd_has(held, n, s);
                for (int r = 0; r < win; r++) bad += !kvd_has(held, n, newest - r);
            }
        if (step < 250 && kvd_batch(&d, 150 + step, 1, NULL, KV_PHASE_DECODE)) {
            CHECK(0);
            break;
        }
    }
    CHECK_MSG(bad == 0, "local (sinks %d, budget %d, bits %d): %d mismatches", sinks, budget, bits, bad);
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    CHECK_EQ_INT(st.heads[0].budget, budget + (bits != 16 ? p.residual : 0));
    CHECK_EQ_INT(st.heads[0].comps, KV_C_LOCAL);
    if (bits != 16 && local > p.residual) CHECK(st.bytes_codes > 0);
    kv_stats_release(&st);
    kvd_free(&d);
}

// ---- every comparison policy: bounded by its budget, stats agree with what is held, memory returned --

static float mixed_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)ud;
    float w = base_w(kpos * 7 + layer * 131 + kvh * 17 + hq);
    if ((kpos * 13 + layer) % 29 == 0) w *= 30.0f;
    if (kpos >= qpos - 4) w *= 5.0f;
    return w;
}

static void test_bounded(int policy, int bits) {
    const int L = 3, H = 2, nq = 4, C = 48, R = 32, n_prompt = 300, n_dec = 260;
    struct kv_cache_params p;
    params(&p, policy, L, H, nq, C, bits);
    struct kvd d;
    if (kvd_init(&d, &p, mixed_fn, NULL)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, n_prompt, 128, NULL), 0);
    int select = policy == KV_POLICY_SNAPKV || policy == KV_POLICY_PYRAMIDKV;
    int32_t held[MAXP];
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    int over = 0, stats_bad = 0, exact_bad = 0;
    uint64_t blocks_mid = 0, blocks_end = 0;
    for (int step = 0; step <= n_dec; step++) {
        if (kv_cache_stats(d.kv, &st)) {
            CHECK(0);
            break;
        }
        int64_t sum = 0;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) {
                int n = kvd_held(&d, l, h, held, MAXP);
                sum += n;
                int lim = select ? st.layer_budget[l] + step : C;
                int staged = bits != 16 ? R : 0; // the KIVI staging window is evicted as it drains
                if (n > lim + staged) over++;
                // exact once the staging window drained; H2O/local with KIVI also hold the R newest exact tokens
                if ((bits == 16 || select) && step >= R && n != lim) exact_bad++;
                stats_bad += st.heads[l * H + h].retained != n;
            }
        stats_bad += sum != st.retained_tokens;
        if (step == n_dec / 2) blocks_mid = kv_cache_blocks_in_use(d.kv);
        if (step == n_dec) blocks_end = kv_cache_blocks_in_use(d.kv);
        if (step < n_dec && kvd_batch(&d, n_prompt + step, 1, NULL, KV_PHASE_DECODE)) {
            CHECK(0);
            break;
        }
    }
    const char *name = kv_policy_name(policy);
    CHECK_MSG(over == 0, "%s bits %d: %d heads over budget", name, bits, over);
    CHECK_MSG(exact_bad == 0, "%s bits %d: %d heads not at their budget", name, bits, exact_bad);
    CHECK_MSG(stats_bad == 0, "%s bits %d: stats disagree with the view %d times", name, bits, stats_bad);
    CHECK(st.kv_bytes < st.kv_bytes_full);
    CHECK_EQ_INT(st.bits, bits);
    if (bits != 16) CHECK_MSG(st.bytes_codes > 0, "%s bits %d packs", name, bits);
    // fixed-budget policies reach a steady state: their storage stops growing (evictions return blocks)
    if (!select) CHECK_MSG(blocks_end <= blocks_mid + (uint64_t)(L * H), "%s bits %d: blocks %llu -> %llu", name,
                           bits, (unsigned long long)blocks_mid, (unsigned long long)blocks_end);
    kv_stats_release(&st);
    kvd_free(&d);
}

int main(void) {
    test_h2o(0, 1, 256);
    test_h2o(0, 1, 30);
    test_h2o(1, 1, 256);
    test_h2o(0, 2, 64);
    test_local(4, 20, 16, 2, 2, 4);
    test_local(0, 12, 16, 1, 1, 1);
    test_local(4, 100, 4, 2, 1, 2);
    test_local(4, 100, 2, 1, 2, 2);
    test_local(4, 20, 4, 1, 1, 1);
    const int pol[] = {KV_POLICY_SNAPKV, KV_POLICY_PYRAMIDKV, KV_POLICY_H2O, KV_POLICY_LOCAL};
    const int bits[] = {16, 4, 2};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 3; b++) test_bounded(pol[i], bits[b]);
    return test_done();
}
