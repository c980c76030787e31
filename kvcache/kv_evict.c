// kvcache/kv_evict.c — applying a head's policy: which tokens stay, and returning the rest's storage.
// A policy is a union of components (kv_stats.h); the architecture's sliding window is always enforced.
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"

int kv_ensure_scratch(struct kv_cache *kv, size_t n) {
    if (n <= kv->tmp_cap) return 0;
    size_t cap = n + n / 2 + 64;
    float *f = realloc(kv->tmp_f, cap * sizeof *f);
    if (!f) return -1;
    kv->tmp_f = f;
    int32_t *i = realloc(kv->tmp_i, cap * sizeof *i);
    if (!i) return -1;
    kv->tmp_i = i;
    kv->tmp_cap = cap;
    return 0;
}

int kv_ensure_moves(struct kv_cache *kv, size_t n) {
    if (n <= kv->mv_cap) return 0;
    size_t cap = n + n / 2 + 64;
    struct kv_slot *a = realloc(kv->mv_src, cap * sizeof *a);
    if (!a) return -1;
    kv->mv_src = a;
    struct kv_slot *b = realloc(kv->mv_dst, cap * sizeof *b);
    if (!b) return -1;
    kv->mv_dst = b;
    kv->mv_cap = cap;
    return 0;
}

// k-th largest (0-based) of a[0..n) by quickselect; reorders a.
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

// Halves the host metadata arrays while they are at most a quarter used (they are counted in kv_bytes).
void kv_fp_meta_shrink(struct kv_cache *kv, struct kv_head *hd) {
    while (hd->cap_fpb > 4 && hd->n_fpb * 4 <= hd->cap_fpb) {
        int cap = hd->cap_fpb / 2;
        size_t ns = (size_t)cap * KV_FP_BLOCK;
        void **fpb = realloc(hd->fpb, (size_t)cap * sizeof *fpb);
        int32_t *pos = realloc(hd->pos, ns * sizeof *pos);
        uint8_t *fl = realloc(hd->flags, ns);
        if (fpb) hd->fpb = fpb;
        if (pos) hd->pos = pos;
        if (fl) hd->flags = fl;
        if (hd->score) {
            float *sc = realloc(hd->score, ns * sizeof *sc);
            if (sc) hd->score = sc;
        }
        if (hd->pend) {
            int32_t *pe = realloc(hd->pend, ns * sizeof *pe);
            if (pe) hd->pend = pe;
        }
        (void)kv;
        hd->cap_fpb = cap; // a failed shrinking realloc leaves the larger block, which is still valid
    }
}

// Removes fp slots (ascending list) by moving the last slot into each hole; frees emptied blocks.
int kv_fp_remove(struct kv_cache *kv, struct kv_head *hd, const int32_t *slots, int n) {
    if (n <= 0) return 0;
    if (kv_ensure_moves(kv, (size_t)n)) return -1;
    int n_mv = 0;
    for (int i = n - 1; i >= 0; i--) {
        int s = slots[i], last = hd->n_fp - 1;
        if (s != last) {
            kv->mv_src[n_mv] = kv_fp_slot(hd, last);
            kv->mv_dst[n_mv] = kv_fp_slot(hd, s);
            n_mv++;
            hd->pos[s] = hd->pos[last];
            hd->flags[s] = hd->flags[last];
            if (hd->score) hd->score[s] = hd->score[last];
            if (hd->pend) hd->pend[s] = hd->pend[last];
        }
        hd->n_fp--;
    }
    if (n_mv) kv->be->ops->kv_move(kv->be, kv->mv_src, kv->mv_dst, n_mv, kv->p.head_dim);
    int need = (hd->n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
    while (hd->n_fpb > need) kv_pool_put(&kv->fp_pool, hd->fpb[--hd->n_fpb]);
    kv_fp_meta_shrink(kv, hd);
    return 0;
}

struct keep_rule {
    uint32_t comps;
    int newest, local_w, sinks, select_end, staging_from, window_from;
    float thr;       // FREQ: keep score > thr, and `ties` tokens with score == thr
    int ties;
};

static int keep_token(struct keep_rule *r, int32_t pos, uint8_t flags, float score) {
    if (pos <= r->window_from) return 0;   // outside the sliding window: gone for good
    if (pos > r->staging_from) return 1;   // KIVI staging window: never evicted
    uint32_t c = r->comps;
    if (c & KV_C_FULL) return 1;
    if ((c & KV_C_SPECIAL) && (flags & KV_TOK_SPECIAL)) return 1;
    if ((c & KV_C_PUNCT) && (flags & KV_TOK_PUNCT)) return 1;
    if ((c & KV_C_LOCAL) && pos > r->newest - r->local_w) return 1;
    if ((c & KV_C_SELECT) && ((flags & KV_TOKF_SELECTED) || pos >= r->select_end)) return 1;
    if (pos < r->sinks) return 1;
    if (c & KV_C_FREQ) {
        if (score > r->thr) return 1;
        if (score == r->thr && r->ties > 0) {
            r->ties--;
            return 1;
        }
    }
    return 0;
}

// Threshold so that at most k tokens are kept by FREQ (ties broken by order of visit). With `excl` (H2O's
// fixed heavy budget) the k are the top among the tokens no other part of the rule keeps, as H2O picks its
// heavy hitters outside the recent window; FastGen's r_f x n set is the top over all tokens, as profiled.
static int freq_threshold(struct kv_cache *kv, struct kv_head *hd, int k, struct keep_rule *r, int excl) {
    int G = kv->p.group;
    size_t n = (size_t)hd->n_fp + (size_t)hd->n_q * G;
    if (kv_ensure_scratch(kv, n)) return -1;
    struct keep_rule base = *r;
    base.comps &= ~(uint32_t)KV_C_FREQ;
    int m = 0;
    for (int s = 0; s < hd->n_fp; s++) {
        if (excl && (hd->pos[s] <= r->window_from || keep_token(&base, hd->pos[s], hd->flags[s], 0.0f))) continue;
        kv->tmp_f[m++] = hd->score ? hd->score[s] : 0.0f;
    }
    for (int g = 0; g < hd->n_q; g++)
        for (int t = 0; t < G; t++) {
            if (!(hd->qm[g].live & (1u << t))) continue;
            int32_t p = kv_gm_pos(&hd->qm[g], t);
            if (excl && (p <= r->window_from || keep_token(&base, p, hd->qm[g].flags[t], 0.0f))) continue;
            kv->tmp_f[m++] = hd->qscore ? hd->qscore[g * G + t] : 0.0f;
        }
    if (k >= m) {
        r->thr = -1.0f;
        r->ties = 0;
        return 0;
    }
    if (k <= 0) {
        r->thr = 1e30f;
        r->ties = 0;
        return 0;
    }
    float thr = kth_largest(kv->tmp_f, m, k - 1);
    int n_gt = 0;
    for (int i = 0; i < m; i++) n_gt += kv->tmp_f[i] > thr;
    r->thr = thr;
    r->ties = k - n_gt;
    return 0;
}

int kv_evict_head(struct kv_cache *kv, int layer, int h, int phase) {
    struct kv_head *hd = kv_head_at(kv, layer, h);
    int W = kv->window[layer];
    int policy_on = phase != KV_PHASE_PROMPT_CHUNK && !(hd->comps & KV_C_FULL);
    if (!policy_on && W == 0) return 0;
    struct keep_rule r;
    memset(&r, 0, sizeof r);
    r.comps = policy_on ? hd->comps : KV_C_FULL;
    r.newest = kv->newest;
    r.local_w = hd->local_w;
    r.sinks = hd->sinks;
    r.select_end = hd->select_end;
    r.staging_from = kv->p.bits != 16 ? kv->newest - kv->p.residual : 0x7fffffff;
    r.window_from = W > 0 ? kv->newest - W : -1;
    r.thr = 1e30f;
    if (policy_on && (hd->comps & KV_C_FREQ)) {
        int k = hd->heavy_k ? hd->heavy_k : (int)(kv->p.heavy_ratio * (float)kv->n_past);
        if (freq_threshold(kv, hd, k, &r, hd->heavy_k > 0)) return -1;
    }
    // fp region
    if (kv_ensure_scratch(kv, (size_t)hd->n_fp)) return -1;
    int n_ev = 0;
    for (int s = 0; s < hd->n_fp; s++) {
        if (!keep_token(&r, hd->pos[s], hd->flags[s], hd->score ? hd->score[s] : 0.0f)) kv->tmp_i[n_ev++] = s;
    }
    for (int i = 0; i < n_ev; i++)
        if (hd->pend && hd->pend[kv->tmp_i[i]] >= 0 && kv_kivi_kill_fp(kv, hd, kv->tmp_i[i])) return -1;
    if (kv_fp_remove(kv, hd, kv->tmp_i, n_ev)) return -1;
    // packed groups: mark dead, free empty ones
    for (int g = 0; g < hd->n_q;) {
        struct kv_group_meta *m = &hd->qm[g];
        uint32_t live = m->live;
        int G = kv->p.group;
        for (int t = 0; t < G; t++)
            if ((live & (1u << t)) &&
                !keep_token(&r, kv_gm_pos(m, t), m->flags[t], hd->qscore ? hd->qscore[g * G + t] : 0.0f))
                live &= ~(1u << t);
        if (live == 0) {
            kv_pool_put(&kv->q_pool, hd->qb[g]);
            hd->n_q--;
            hd->qb[g] = hd->qb[hd->n_q];
            hd->qm[g] = hd->qm[hd->n_q];
            if (hd->qscore)
                memcpy(hd->qscore + (size_t)g * G, hd->qscore + (size_t)hd->n_q * G, (size_t)G * sizeof(float));
            continue;
        }
        if (live != m->live) kv_group_set_live(kv, hd->qb[g], m, live);
        g++;
    }
    return 0;
}
