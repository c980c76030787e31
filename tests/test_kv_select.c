// tests/test_kv_select.c — SnapKV / PyramidKV: layer budgets, pooled top-k on constructed attention, the window,
// micro-batch straddling, decoded tokens appended, multi-turn re-selection, sliding layers, KIVI composition.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"
#include "tests/kv_drive.h"
#include "tests/test.h"

// ---- budgets (pure) ---------------------------------------------------------------------------

static void test_budgets(void) {
    int out[64];
    // PyramidKV: L = 5, C = 64, w = 8 -> K = 56, top = 56/20 = 2, bottom = 110
    kv_select_budgets(5, 1, 64, 8, 20.0f, 1000, out);
    CHECK_EQ_INT(out[0], 110);
    CHECK_EQ_INT(out[4], 2);
    CHECK_EQ_INT(out[0] + out[1] + out[2] + out[3] + out[4], 5 * 56);
    CHECK_EQ_INT(out[2], 56); // the middle layer keeps the average
    // SnapKV: the same in every layer
    kv_select_budgets(5, 0, 64, 8, 20.0f, 1000, out);
    for (int l = 0; l < 5; l++) CHECK_EQ_INT(out[l], 56);
    // prompt shorter than the budget: everything, both policies
    kv_select_budgets(5, 1, 64, 8, 20.0f, 40, out);
    for (int l = 0; l < 5; l++) CHECK_EQ_INT(out[l], 40);
    kv_select_budgets(5, 0, 64, 8, 20.0f, 56, out);
    for (int l = 0; l < 5; l++) CHECK_EQ_INT(out[l], 56);
    // bottom clamped to the prefix, the top raised so the total stays L*K
    kv_select_budgets(18, 1, 100, 8, 20.0f, 100, out);
    CHECK_EQ_INT(out[0], 100);
    CHECK_EQ_INT(out[17], 2 * 92 - 100);
    long sum = 0;
    for (int l = 0; l < 18; l++) sum += out[l];
    CHECK_EQ_INT(sum, 18 * 92);
    // many shapes: exact total, endpoints, linear within rounding, monotone, never above the prefix
    int bad = 0;
    for (int L = 2; L <= 40; L += 3)
        for (int C = 9; C <= 600; C += 37)
            for (int w = 1; w <= 16; w *= 2)
                for (float beta = 1.0f; beta <= 40.0f; beta *= 2.5f)
                    for (int np = C / 2; np <= 3 * C; np += C / 2 + 1) {
                        kv_select_budgets(L, 1, C, w, beta, np, out);
                        int K = C - w > 0 ? C - w : 0;
                        long s = 0;
                        for (int l = 0; l < L; l++) {
                            s += out[l];
                            if (out[l] > np || out[l] < 0) bad++;
                            if (l && out[l] > out[l - 1]) bad++;
                        }
                        if (np <= K) {
                            for (int l = 0; l < L; l++) bad += out[l] != np;
                            continue;
                        }
                        if (s != (long)L * K) bad++;
                        int top = (int)((float)K / beta), bottom = 2 * K - top;
                        if (bottom > np) {
                            bottom = np;
                            top = 2 * K - np;
                        }
                        if (out[0] != bottom || out[L - 1] != top) bad++;
                        for (int l = 0; l < L; l++) {
                            double lin = bottom + (double)(top - bottom) * l / (L - 1);
                            if (out[l] < lin - 1.0 || out[l] > lin + 1.0) bad++;
                        }
                    }
    CHECK_EQ_INT(bad, 0);
}

// ---- constructed attention ----------------------------------------------------------------------

// Window rows (q >= win_from): query head 0 peaks at peak0, query head 1 at peak1 (slightly smaller),
// an isolated peak at iso (between the two in height); other rows attend a decoy at `decoy` strongly.
struct peaks {
    int win_from;
    int peak0, peak1, iso, decoy;
    int per_head_shift; // KV head h's peaks move by h * shift
};

static float peaks_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)layer;
    const struct peaks *pk = ud;
    int sh = kvh * pk->per_head_shift;
    if (qpos < pk->win_from) return kpos == pk->decoy ? 50.0f : 0.01f;
    if (hq == 0 && kpos == pk->peak0 + sh) return 1.0f;
    if (hq == 1 && kpos == pk->peak1 + sh) return 0.95f;
    if (hq == 0 && kpos == pk->iso + sh) return 0.9f;
    return 0.001f;
}

static void base_params(struct kv_cache_params *p, int policy, int L, int H, int nq, int budget) {
    kv_cache_params_default(p);
    p->n_layer = L;
    p->n_head_kv = H;
    p->n_head = nq;
    p->head_dim = 8;
    p->n_ctx = 1024;
    p->policy = policy;
    p->budget = budget;
    p->obs_window = 8;
}

// Peak at 20 (query head 0) next to a slightly smaller one at 22 (query head 1): pooling keeps 17..25,
// the 9 tokens around them, and not the isolated 0.9 at 50 that a raw top-9 would take; the decoy the
// earlier rows attend to is not chosen; the window 56..63 is always kept. Same whether the window
// straddles two micro-batches or not.
static void test_pooled_topk(int ubatch) {
    struct kv_cache_params p;
    base_params(&p, KV_POLICY_SNAPKV, 2, 2, 4, 9 + 8);
    struct peaks pk = {.win_from = 56, .peak0 = 20, .peak1 = 22, .iso = 50, .decoy = 5, .per_head_shift = 3};
    struct kvd d;
    if (kvd_init(&d, &p, peaks_fn, &pk)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, 64, ubatch, NULL), 0);
    int32_t held[256];
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < 2; h++) {
            int n = kvd_held(&d, l, h, held, 256);
            CHECK_EQ_INT(n, 17);
            int ok = 1;
            for (int q = 17; q <= 25; q++) ok &= kvd_has(held, n, q + 3 * h);
            for (int q = 56; q < 64; q++) ok &= kvd_has(held, n, q);
            CHECK_MSG(ok, "layer %d head %d: neighbourhood of the peaks and the window kept (ubatch %d)", l, h,
                      ubatch);
            CHECK(!kvd_has(held, n, 50 + 3 * h));
            CHECK(!kvd_has(held, n, 5));
        }
    // probabilities were asked for only where observation rows were (2 layers x the batches holding 56..63)
    int want = ubatch >= 64 ? 2 : 2 * ((63 / ubatch) - (56 / ubatch) + 1);
    CHECK_EQ_INT(d.n_probs_batches, want);
    kvd_free(&d);
}

// Window rows that attend nothing inside the window still keep it; budget = window: only the window.
static float flat_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)ud, (void)layer, (void)kvh, (void)hq;
    return kpos < qpos - 10 ? 1.0f + (float)(kvd_hash((uint32_t)kpos) % 100) : 0.0f;
}

static void test_window_kept(void) {
    struct kv_cache_params p;
    base_params(&p, KV_POLICY_SNAPKV, 1, 1, 1, 8);
    struct kvd d;
    if (kvd_init(&d, &p, flat_fn, NULL)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, 100, 256, NULL), 0);
    int32_t held[256];
    int n = kvd_held(&d, 0, 0, held, 256);
    CHECK_EQ_INT(n, 8);
    CHECK(n == 8 && held[0] == 92 && held[7] == 99);
    kvd_free(&d);
}

// Decoded tokens are appended; the selection stays; retained = budget + decoded, every step.
// A second prompt re-selects among what is held (new peaks), back to the budget.
struct turns {
    int win_from;
    int peak; // window rows attend here
};
static float turns_fn(void *ud, int layer, int kvh, int hq, int qpos, int kpos) {
    (void)layer, (void)kvh, (void)hq;
    const struct turns *t = ud;
    if (qpos >= t->win_from && kpos == t->peak) return 1.0f;
    return 0.001f * (float)(1 + kvd_hash((uint32_t)(kpos * 31 + qpos)) % 7);
}

static void test_decode_and_turns(int bits) {
    struct kv_cache_params p;
    base_params(&p, KV_POLICY_SNAPKV, 3, 2, 4, 40);
    p.bits = bits;
    p.residual = 32;
    struct turns t = {.win_from = 192, .peak = 100};
    struct kvd d;
    if (kvd_init(&d, &p, turns_fn, &t)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, 200, 64, NULL), 0);
    int32_t held[2048];
    int extra = bits == 16 ? 0 : p.residual; // the KIVI staging window is evicted only as it drains
    int over = 0, lost = 0;
    const int n1 = 100; // turn 1 decodes: leaves KIVI groups still filling with decoded tokens 256..267
    for (int step = 0; step < n1; step++) {
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 2; h++) {
                int n = kvd_held(&d, l, h, held, 2048);
                int lim = 40 + step + (step < extra ? extra - step : 0);
                if (n > lim) over++;
                for (int q = 0; q < step; q++) lost += !kvd_has(held, n, 200 + q);
                lost += !kvd_has(held, n, 100);
                if (step >= extra) {
                    if (n != 40 + step) over++;
                }
            }
        if (kvd_batch(&d, 200 + step, 1, NULL, KV_PHASE_DECODE)) {
            CHECK(0);
            break;
        }
    }
    CHECK_EQ_INT(over, 0);
    CHECK_EQ_INT(lost, 0);
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    CHECK_EQ_INT(st.retained_tokens, 3 * 2 * (40 + n1));
    if (bits != 16) CHECK(st.bytes_codes > 0);
    CHECK(st.kv_bytes < st.kv_bytes_full);
    // turn 2: 60 new tokens; the window rows attend to a token decoded in turn 1 (with KIVI it waits in a
    // group still filling, whose copy of the flags must follow the new choice)
    int t2 = 200 + n1, e2 = t2 + 60;
    t.win_from = e2 - 8;
    t.peak = 260;
    CHECK_EQ_INT(kvd_prompt(&d, t2, 60, 256, NULL), 0);
    for (int step = 0; step <= 70; step++) {
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 2; h++) {
                int n = kvd_held(&d, l, h, held, 2048);
                if (step >= extra) CHECK_EQ_INT(n, 40 + step);
                CHECK(kvd_has(held, n, 260));
                CHECK(kvd_has(held, n, e2 - 1) && kvd_has(held, n, e2 - 8));
            }
        if (kvd_batch(&d, e2 + step, 1, NULL, KV_PHASE_DECODE)) {
            CHECK(0);
            break;
        }
    }
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    CHECK_EQ_INT(st.policy, KV_POLICY_SNAPKV);
    for (int l = 0; l < 3; l++) CHECK_EQ_INT(st.layer_budget[l], 40);
    for (int i = 0; i < 6; i++) CHECK_EQ_INT(st.heads[i].comps, KV_C_SELECT);
    kv_stats_release(&st);
    kvd_free(&d);
}

// PyramidKV through the cache: per layer retained = its budget, budgets sum to L * C, layer 0 the largest.
static void test_pyramid_cache(void) {
    struct kv_cache_params p;
    base_params(&p, KV_POLICY_PYRAMIDKV, 5, 2, 2, 48);
    struct peaks pk = {.win_from = 292, .peak0 = 20, .peak1 = 22, .iso = 50, .decoy = 5};
    struct kvd d;
    if (kvd_init(&d, &p, peaks_fn, &pk)) {
        CHECK(0);
        return;
    }
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0); // the plan before any prompt
    long sum = 0;
    for (int l = 0; l < 5; l++) sum += st.layer_budget[l];
    CHECK_EQ_INT(sum, 5 * 48);
    CHECK_EQ_INT(st.layer_budget[4], 8 + 40 / 20);
    CHECK_EQ_INT(kvd_prompt(&d, 0, 300, 128, NULL), 0);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    sum = 0;
    for (int l = 0; l < 5; l++) sum += st.layer_budget[l];
    CHECK_EQ_INT(sum, 5 * 48);
    CHECK_EQ_INT(st.layer_budget[0], 8 + 80 - 2);
    CHECK_EQ_INT(st.layer_budget[4], 8 + 2);
    int32_t held[512];
    for (int l = 0; l < 5; l++)
        for (int h = 0; h < 2; h++) {
            int n = kvd_held(&d, l, h, held, 512);
            CHECK_EQ_INT(n, st.layer_budget[l]);
            CHECK(kvd_has(held, n, 20) && kvd_has(held, n, 299) && kvd_has(held, n, 292));
        }
    CHECK_EQ_INT(st.retained_tokens, 2 * 5 * 48);
    kv_stats_release(&st);
    kvd_free(&d);
}

// A prompt shorter than the budget keeps everything (both policies), and the stats say so.
static void test_short_prompt(int policy) {
    struct kv_cache_params p;
    base_params(&p, policy, 4, 1, 2, 64);
    struct peaks pk = {.win_from = 42, .peak0 = 3, .peak1 = 4, .iso = 30, .decoy = 1};
    struct kvd d;
    if (kvd_init(&d, &p, peaks_fn, &pk)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, 50, 256, NULL), 0);
    int32_t held[128];
    for (int l = 0; l < 4; l++) CHECK_EQ_INT(kvd_held(&d, l, 0, held, 128), 50);
    struct kv_stats st;
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(kv_cache_stats(d.kv, &st), 0);
    for (int l = 0; l < 4; l++) CHECK_EQ_INT(st.layer_budget[l], 50);
    kv_stats_release(&st);
    kvd_free(&d);
}

// A sliding-window layer holds only its window; the selection never spends budget on tokens outside it.
static void test_sliding_layer(void) {
    struct kv_cache_params p;
    base_params(&p, KV_POLICY_SNAPKV, 2, 1, 1, 24);
    int win[2] = {32, 0};
    p.layer_window = win;
    struct peaks pk = {.win_from = 92, .peak0 = 10, .peak1 = 10, .iso = 80, .decoy = 1};
    struct kvd d;
    if (kvd_init(&d, &p, peaks_fn, &pk)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(kvd_prompt(&d, 0, 100, 40, NULL), 0);
    int32_t held[128];
    int n0 = kvd_held(&d, 0, 0, held, 128);
    CHECK_EQ_INT(n0, 24);
    CHECK(n0 > 0 && held[0] > 100 - 32 - 1);
    CHECK(kvd_has(held, n0, 80));
    int n1 = kvd_held(&d, 1, 0, held, 128);
    CHECK_EQ_INT(n1, 24);
    CHECK(kvd_has(held, n1, 10) && kvd_has(held, n1, 80));
    kvd_free(&d);
}

int main(void) {
    test_budgets();
    test_pooled_topk(256);
    test_pooled_topk(60);
    test_pooled_topk(7);
    test_window_kept();
    test_decode_and_turns(16);
    test_decode_and_turns(4);
    test_decode_and_turns(2);
    test_pyramid_cache();
    test_short_prompt(KV_POLICY_SNAPKV);
    test_short_prompt(KV_POLICY_PYRAMIDKV);
    test_sliding_layer();
    return test_done();
}
