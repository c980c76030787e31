// kvcache/kv_select.c — SnapKV / PyramidKV (SPEC §6): at a prompt's end each KV head keeps the w newest tokens
// and the prefix tokens the last w queries attended to most (1-D max-pooled); PyramidKV narrows budgets with depth.
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"

#define KV_SEL_POOL 7 // max-pool kernel width (same padding: 3 neighbours on each side)

static int sel_policy(const struct kv_cache *kv) {
    return kv->p.policy == KV_POLICY_SNAPKV || kv->p.policy == KV_POLICY_PYRAMIDKV;
}

int kv_select_avg_budget(const struct kv_cache *kv) {
    int c = kv->p.budget > 0 ? kv->p.budget : kv->p.n_ctx / 4;
    return c < 2 ? 2 : c;
}

int kv_select_window(const struct kv_cache *kv) { return kv->p.obs_window > 0 ? kv->p.obs_window : 1; }

void kv_select_budgets(int n_layer, int pyramid, int budget, int window, float beta, int n_prefix, int *out) {
    int K = budget - window; // prefix tokens a layer keeps on average
    if (K < 0) K = 0;
    if (n_prefix < 0) n_prefix = 0;
    if (n_prefix <= K) { // the prompt fits: keep everything in every layer
        for (int l = 0; l < n_layer; l++) out[l] = n_prefix;
        return;
    }
    if (!pyramid || n_layer == 1) {
        for (int l = 0; l < n_layer; l++) out[l] = K;
        return;
    }
    // top layer K/beta, bottom layer 2K - top; when the bottom exceeds the prefix it is clamped and the
    // top raised by as much, so the layers still keep n_layer * K in all.
    int top = beta > 0.0f ? (int)((float)K / beta) : K;
    if (top > K) top = K;
    int bottom = 2 * K - top;
    if (bottom > n_prefix) {
        bottom = n_prefix;
        top = 2 * K - n_prefix;
    }
    // linear in between: r_l = bottom - d*l/(L-1) exactly in integers; floors, then the units the floors
    // miss go to the largest remainders (lower layers first on ties), which keeps the budgets monotone and
    // the endpoints exact (their remainder is 0)
    long long den = n_layer - 1, d = bottom - top, missing = (long long)n_layer * K;
    for (int l = 0; l < n_layer; l++) {
        out[l] = (int)((bottom * den - d * l) / den);
        missing -= out[l];
    }
    for (int l = 0; l < n_layer && missing > 0; l++) {
        long long rl = (bottom * den - d * l) % den, rank = 0;
        for (int j = 0; j < n_layer && rank < missing; j++) {
            long long rj = (bottom * den - d * j) % den;
            rank += rj > rl || (rj == rl && j < l);
        }
        if (rank < missing && rl > 0) out[l]++;
    }
}

// The planned budgets (prefix + window per layer) for a prompt filling the context.
void kv_select_plan(struct kv_cache *kv) {
    if (!kv->layer_budget) return;
    int w = kv_select_window(kv), L = kv->p.n_layer;
    kv_select_budgets(L, kv->p.policy == KV_POLICY_PYRAMIDKV, kv_select_avg_budget(kv), w, kv->p.pyramid_beta,
                      kv->p.n_ctx - w, kv->layer_budget);
    for (int l = 0; l < L; l++) kv->layer_budget[l] += w;
}

// First position of the observation window of the prompt in progress.
static int obs_from(const struct kv_cache *kv) {
    int from = kv->prompt_total - kv_select_window(kv);
    return from > kv->prompt_start ? from : kv->prompt_start;
}

int kv_select_begin(struct kv_cache *kv) {
    if (!sel_policy(kv)) return 0;
    size_t need = (size_t)kv->p.n_layer * kv->p.n_head_kv * kv->p.n_ctx;
    if (!kv->sel_score) { // once: (n_layer * n_head_kv, n_ctx) window attention per key position
        kv->sel_score = malloc(need * sizeof *kv->sel_score);
        if (!kv->sel_score) {
            kv->sel_active = -1;
            return -1;
        }
    }
    memset(kv->sel_score, 0, need * sizeof *kv->sel_score);
    kv->sel_active = 1;
    return 0;
}

int kv_select_wants_probs(const struct kv_cache *kv) { return kv->sel_active == 1 && kv->newest >= obs_from(kv); }

void kv_select_rows(struct kv_cache *kv, int layer, const float *probs, int n_tok, int stride,
                    const int32_t *q_pos) {
    if (kv->sel_active != 1) return;
    int G = kv->p.group, ng = kv->n_group, from = obs_from(kv);
    for (int h = 0; h < kv->p.n_head_kv; h++) {
        struct kv_head *hd = kv_head_at(kv, layer, h);
        float *acc = kv->sel_score + (size_t)(layer * kv->p.n_head_kv + h) * kv->p.n_ctx;
        for (int i = 0; i < n_tok; i++) {
            if (q_pos[i] < from || q_pos[i] >= kv->prompt_total) continue;
            for (int hq = h * ng; hq < (h + 1) * ng; hq++) { // GQA: the group's query heads, summed
                const float *row = probs + ((size_t)hq * n_tok + i) * stride;
                for (int g = 0; g < hd->n_q; g++) {
                    const struct kv_group_meta *m = &hd->qm[g];
                    for (int t = 0; t < G; t++)
                        if (m->live & (1u << t)) acc[kv_gm_pos(m, t)] += row[g * G + t];
                }
                const float *fr = row + (size_t)hd->n_q * G;
                for (int s = 0; s < hd->n_fp; s++) acc[hd->pos[s]] += fr[s];
            }
        }
    }
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

struct rank_ctx {
    const float *pooled, *raw;
};

// Best first: pooled score, then own score, then the later position.
static int cmp_rank(const void *a, const void *b, void *ud) {
    const struct rank_ctx *c = ud;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (c->pooled[i] != c->pooled[j]) return c->pooled[i] > c->pooled[j] ? -1 : 1;
    if (c->raw[i] != c->raw[j]) return c->raw[i] > c->raw[j] ? -1 : 1;
    return (j > i) - (j < i);
}

static void set_selected(uint8_t *flags, int keep) {
    if (keep)
        *flags |= KV_TOKF_SELECTED;
    else
        *flags &= (uint8_t)~KV_TOKF_SELECTED;
}

// Chooses head (layer, h)'s k prefix tokens among those it holds before position win_from and flags the kept
// ones (and the window) KV_TOKF_SELECTED; kv_evict_head then drops the rest.
static int select_head(struct kv_cache *kv, int layer, int h, int k, int win_from) {
    struct kv_head *hd = kv_head_at(kv, layer, h);
    float *acc = kv->sel_score + (size_t)(layer * kv->p.n_head_kv + h) * kv->p.n_ctx;
    int G = kv->p.group, W = kv->window[layer];
    int gone = W > 0 ? kv->newest - W : -1; // positions <= gone left the sliding window
    size_t cap = (size_t)hd->n_fp + (size_t)hd->n_q * G;
    if (kv_ensure_scratch(kv, 2 * cap + 1)) return -1;
    int32_t *pos = kv->tmp_i, *order = kv->tmp_i + cap;
    float *raw = kv->tmp_f, *pooled = kv->tmp_f + cap;
    // candidates in position order (pooling runs over neighbours among the held tokens)
    int n = 0;
    for (int g = 0; g < hd->n_q; g++)
        for (int t = 0; t < G; t++) {
            int32_t p = kv_gm_pos(&hd->qm[g], t);
            if ((hd->qm[g].live & (1u << t)) && p < win_from && p > gone) pos[n++] = p;
        }
    for (int s = 0; s < hd->n_fp; s++)
        if (hd->pos[s] < win_from && hd->pos[s] > gone) pos[n++] = hd->pos[s];
    if (n > k) {
        qsort(pos, (size_t)n, sizeof *pos, cmp_int32);
        for (int i = 0; i < n; i++) raw[i] = acc[pos[i]];
        for (int i = 0; i < n; i++) {
            float m = raw[i];
            int lo = i - KV_SEL_POOL / 2 < 0 ? 0 : i - KV_SEL_POOL / 2;
            int hi = i + KV_SEL_POOL / 2 >= n ? n - 1 : i + KV_SEL_POOL / 2;
            for (int j = lo; j <= hi; j++)
                if (raw[j] > m) m = raw[j];
            pooled[i] = m;
        }
        for (int i = 0; i < n; i++) order[i] = i;
        struct rank_ctx rc = {pooled, raw};
        qsort_r(order, (size_t)n, sizeof *order, cmp_rank, &rc);
        // acc now marks the kept prefix positions with 1 (it is not read again for this prompt)
        for (int i = 0; i < n; i++) acc[pos[i]] = 0.0f;
        for (int i = 0; i < k; i++) acc[pos[order[i]]] = 1.0f;
    } else {
        for (int i = 0; i < n; i++) acc[pos[i]] = 1.0f;
    }
    // flags: kept = in the window, or chosen; everything else loses the mark (earlier turns' choices too)
    for (int s = 0; s < hd->n_fp; s++) {
        int32_t p = hd->pos[s];
        int keep = p >= win_from || (p > gone && acc[p] == 1.0f);
        set_selected(&hd->flags[s], keep);
        if (hd->pend && hd->pend[s] >= 0) // queued in a KIVI group still filling: its copy of the flags too
            set_selected(&hd->fm[hd->pend[s] / KV_MAX_GROUP].flags[hd->pend[s] % KV_MAX_GROUP], keep);
    }
    for (int g = 0; g < hd->n_q; g++)
        for (int t = 0; t < G; t++) {
            int32_t p = kv_gm_pos(&hd->qm[g], t);
            if (hd->qm[g].live & (1u << t))
                set_selected(&hd->qm[g].flags[t], p >= win_from || (p > gone && acc[p] == 1.0f));
        }
    hd->comps = KV_C_SELECT;
    hd->select_end = kv->prompt_total;
    hd->local_w = hd->heavy_k = hd->sinks = 0;
    return 0;
}

int kv_select_choose(struct kv_cache *kv) {
    if (kv->sel_active == 0) return 0;
    if (kv->sel_active < 0) { // the score buffer could not be allocated
        kv->sel_active = 0;
        return -1;
    }
    kv->sel_active = 0;
    int L = kv->p.n_layer, w = kv_select_window(kv);
    int win_from = kv->prompt_total - w;
    int n_prefix = win_from > 0 ? win_from : 0;
    int w_kept = kv->prompt_total - n_prefix;
    kv_select_budgets(L, kv->p.policy == KV_POLICY_PYRAMIDKV, kv_select_avg_budget(kv), w, kv->p.pyramid_beta,
                      n_prefix, kv->layer_budget);
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < kv->p.n_head_kv; h++)
            if (select_head(kv, l, h, kv->layer_budget[l], win_from)) return -1;
        kv->layer_budget[l] += w_kept;
    }
    return 0;
}
