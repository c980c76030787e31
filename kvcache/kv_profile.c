// kvcache/kv_profile.c — FastGen profiling (SPEC §3): for each KV head, the attention mass each candidate
// policy would recover on the prompt's query rows, and the choice of the cheapest one reaching T.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"

void kv_profile_begin(struct kv_cache *kv) {
    kv->profiling = 1;
    int nh = kv->p.n_layer * kv->p.n_head_kv;
    for (int i = 0; i < nh; i++) {
        struct kv_prof *pf = &kv->heads[i].prof;
        memset(pf->mass, 0, sizeof pf->mass);
        pf->rows = 0;
        if (pf->per_q) memset(pf->per_q, 0, (size_t)kv->n_group * KV_N_CAND * sizeof(double));
    }
}

// k-th largest (0-based) by quickselect; reorders a[0..n).
static float kth(float *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pv = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pv) i++;
            while (a[j] < pv) j--;
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

// Candidate index (0..KV_N_CAND-1) of the cheapest candidate containing the component bits `m`.
// cand 0 = S, 1 = S+P, 2 = S+P+F, 3 = S+P+F+L, 4 = full.
static int first_cand(uint32_t m) {
    if (m & KV_C_SPECIAL) return 0;
    if (m & KV_C_PUNCT) return 1;
    if (m & KV_C_FREQ) return 2;
    if (m & KV_C_LOCAL) return 3;
    return 4;
}

struct slot_ref {
    int32_t pos;
    uint8_t flags;
    float *score;
};

void kv_profile_rows(struct kv_cache *kv, int layer, const float *probs, int n_tok, int stride,
                     const int32_t *q_pos) {
    int G = kv->p.group, ng = kv->n_group;
    float inv = 1.0f / (float)ng;
    int w_l = (int)ceilf(kv->p.local_ratio * (float)kv->prompt_total);
    for (int h = 0; h < kv->p.n_head_kv; h++) {
        struct kv_head *hd = kv_head_at(kv, layer, h);
        int n_slots = hd->n_q * G + hd->n_fp;
        if (kv_ensure_scratch(kv, 3 * (size_t)n_slots + 8)) return;
        float *a = kv->tmp_f;              // group-mean row
        float *sel = kv->tmp_f + n_slots;  // scores of visible slots (selection scratch)
        uint8_t *memb = (uint8_t *)(kv->tmp_f + 2 * (size_t)n_slots); // first candidate per slot
        for (int i = 0; i < n_tok; i++) {
            int32_t p = q_pos[i];
            // group mean of this row (added to the running scores only after the row is judged)
            for (int j = 0; j < n_slots; j++) a[j] = 0.0f;
            for (int hq = h * ng; hq < (h + 1) * ng; hq++) {
                const float *row = probs + ((size_t)hq * n_tok + i) * stride;
                for (int j = 0; j < n_slots; j++) a[j] += inv * row[j];
            }
            // What the cache holds when token p arrives during decoding: what the eviction after step p-1
            // kept (heavy hitters: the top floor(r_f * p) older tokens by the scores of rows before p; local:
            // the w_l tokens before p), plus token p itself.
            int n_vis = 0;
            for (int g = 0; g < hd->n_q; g++)
                for (int t = 0; t < G; t++) {
                    struct kv_group_meta *m = &hd->qm[g];
                    if ((m->live & (1u << t)) && kv_gm_pos(m, t) < p) sel[n_vis++] = hd->qscore[g * G + t];
                }
            for (int s = 0; s < hd->n_fp; s++)
                if (hd->pos[s] < p) sel[n_vis++] = hd->score[s];
            int k = (int)(kv->p.heavy_ratio * (float)p);
            float thr = 1e30f;
            int ties = 0;
            if (k >= n_vis) {
                thr = -1.0f;
            } else if (k > 0) {
                thr = kth(sel, n_vis, k - 1);
                int n_gt = 0;
                for (int j = 0; j < n_vis; j++) n_gt += sel[j] > thr;
                ties = k - n_gt;
            }
            // the first candidate that keeps each visible slot (the query's own token is always held)
            for (int j = 0; j < n_slots; j++) {
                int32_t tp;
                uint8_t fl;
                float sc;
                if (j < hd->n_q * G) {
                    struct kv_group_meta *m = &hd->qm[j / G];
                    if (!(m->live & (1u << (j % G)))) {
                        memb[j] = 255;
                        continue;
                    }
                    tp = kv_gm_pos(m, j % G);
                    fl = m->flags[j % G];
                    sc = hd->qscore[j];
                } else {
                    int s = j - hd->n_q * G;
                    tp = hd->pos[s];
                    fl = hd->flags[s];
                    sc = hd->score[s];
                }
                if (tp > p) {
                    memb[j] = 255;
                    continue;
                }
                if (tp == p) {
                    memb[j] = 0;
                    continue;
                }
                uint32_t c = 0;
                if (fl & KV_TOK_SPECIAL) c |= KV_C_SPECIAL;
                if (fl & KV_TOK_PUNCT) c |= KV_C_PUNCT;
                if (sc > thr || (sc == thr && ties-- > 0)) c |= KV_C_FREQ;
                if (tp >= p - w_l) c |= KV_C_LOCAL;
                memb[j] = (uint8_t)first_cand(c);
            }
            // FastGen's running heavy-hitter statistics: this row's attention joins the scores
            for (int j = 0; j < n_slots; j++) {
                if (memb[j] == 255) continue;
                if (j < hd->n_q * G)
                    hd->qscore[j] += a[j];
                else
                    hd->score[j - hd->n_q * G] += a[j];
            }
            // mass recovered by each candidate: slots whose first candidate is <= c
            double mean_m[KV_N_CAND] = {0};
            for (int q = 0; q < ng; q++) {
                const float *row = probs + ((size_t)(h * ng + q) * n_tok + i) * stride;
                double m[KV_N_CAND] = {0};
                for (int j = 0; j < n_slots; j++)
                    if (memb[j] != 255) m[memb[j]] += row[j];
                double cum = 0.0;
                for (int c = 0; c < KV_N_CAND; c++) {
                    cum += m[c];
                    hd->prof.per_q[q * KV_N_CAND + c] += cum;
                    mean_m[c] += cum / ng;
                }
            }
            for (int c = 0; c < KV_N_CAND; c++) hd->prof.mass[c] += mean_m[c];
            hd->prof.rows++;
        }
    }
}

void kv_profile_choose(struct kv_cache *kv) {
    float T = kv->p.recovery;
    int w_l = (int)ceilf(kv->p.local_ratio * (float)kv->prompt_total);
    int nh = kv->p.n_layer * kv->p.n_head_kv;
    for (int i = 0; i < nh; i++) {
        struct kv_head *hd = &kv->heads[i];
        struct kv_prof *pf = &hd->prof;
        if (pf->rows == 0) continue;
        int pick = KV_N_CAND - 1;
        if (T < 1.0f) { // T = 1 means lossless: only the full cache qualifies
            for (int c = 0; c < KV_N_CAND - 1; c++)
                if (pf->mass[c] / (double)pf->rows >= T) {
                    pick = c;
                    break;
                }
        }
        double rmin = 1.0;
        for (int q = 0; q < kv->n_group; q++) {
            double r = pf->per_q[q * KV_N_CAND + pick] / (double)pf->rows;
            if (r < rmin) rmin = r;
        }
        hd->comps = kv_fastgen_cands[pick];
        hd->local_w = w_l;
        hd->heavy_k = 0;
        hd->recovery = pick == KV_N_CAND - 1 ? 1.0f : (float)(pf->mass[pick] / (double)pf->rows);
        hd->recovery_min = pick == KV_N_CAND - 1 ? 1.0f : (float)rmin;
    }
}
