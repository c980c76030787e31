// kvcache/kv_kivi.c — KIVI packing inside the cache (SPEC §4, §5): the R newest tokens stay exact; a
// token leaving that window (and surviving its head's policy) has its value quantised per token at once
// and its key queued; every G queued keys become one per-channel group ("ours"). --kv-flush block gives
// the paper's variant: keys are quantised R at a time when the residual fills.
#include <stdlib.h>
#include <string.h>

#include "app/params.h"
#include "kvcache/kv_internal.h"

void kv_group_set_live(struct kv_cache *kv, void *block, struct kv_group_meta *m, uint32_t live) {
    m->live = live;
    kv->be->ops->upload(kv->be, (char *)block + 4, &live, sizeof live);
}

static void run_job(struct kv_cache *kv, const struct kv_qjob *job) {
    kv->be->ops->kv_quant(kv->be, job, 1, kv->qf);
}

// A new, zeroed group appended to the fill list; its index, or -1 when out of memory.
static int new_fill_group(struct kv_cache *kv, struct kv_head *hd) {
    if (hd->n_fill == hd->cap_fill) {
        int cap = hd->cap_fill ? 2 * hd->cap_fill : 4;
        void **fb = realloc(hd->fb, (size_t)cap * sizeof *fb);
        if (!fb) return -1;
        hd->fb = fb;
        struct kv_group_meta *fm = realloc(hd->fm, (size_t)cap * sizeof *fm);
        if (!fm) return -1;
        hd->fm = fm;
        hd->cap_fill = cap;
    }
    void *b = kv_pool_get(&kv->q_pool);
    if (!b) return -1;
    kv->be->ops->memset0(kv->be, b, kv->q_pool.block_bytes);
    int f = hd->n_fill++;
    hd->fb[f] = b;
    memset(&hd->fm[f], 0, sizeof hd->fm[f]);
    return f;
}

// fp slot of each filled slot of fill group f (-1 where none).
static void fill_slots(const struct kv_head *hd, int f, int32_t *out) {
    for (int t = 0; t < KV_MAX_GROUP; t++) out[t] = -1;
    for (int s = 0; s < hd->n_fp; s++) {
        int32_t p = hd->pend[s];
        if (p >= 0 && p / KV_MAX_GROUP == f) out[p % KV_MAX_GROUP] = s;
    }
}

static int group_ready(const struct kv_group_meta *m) { return m->kdone && (m->vdone & m->live) == m->live; }

// Moves every ready fill group to the complete list (or frees it when all its tokens died), drops
// their tokens from the fp region and renumbers the queue references of the groups that remain.
static int complete_ready(struct kv_cache *kv, struct kv_head *hd) {
    int n_fill = hd->n_fill, k = 0, any = 0;
    int *remap = malloc((size_t)(n_fill + 1) * sizeof *remap);
    if (!remap) return -1;
    for (int f = 0; f < n_fill; f++) {
        if (!group_ready(&hd->fm[f])) {
            hd->fb[k] = hd->fb[f];
            hd->fm[k] = hd->fm[f];
            remap[f] = k++;
            continue;
        }
        any = 1;
        remap[f] = -1;
        if (hd->fm[f].live == 0) {
            kv_pool_put(&kv->q_pool, hd->fb[f]);
            continue;
        }
        if (hd->n_q == hd->cap_q) {
            int cap = hd->cap_q ? 2 * hd->cap_q : 8;
            void **qb = realloc(hd->qb, (size_t)cap * sizeof *qb);
            if (!qb) goto oom;
            hd->qb = qb;
            struct kv_group_meta *qm = realloc(hd->qm, (size_t)cap * sizeof *qm);
            if (!qm) goto oom;
            hd->qm = qm;
            if (kv->needs_scores) {
                float *qs = realloc(hd->qscore, (size_t)cap * kv->p.group * sizeof *qs);
                if (!qs) goto oom;
                hd->qscore = qs;
            }
            hd->cap_q = cap;
        }
        hd->qb[hd->n_q] = hd->fb[f];
        hd->qm[hd->n_q] = hd->fm[f];
        remap[f] = -2 - hd->n_q; // completed into packed group n_q
        hd->n_q++;
    }
    hd->n_fill = k;
    if (!any) {
        free(remap);
        return 0;
    }
    int n_rm = 0;
    for (int s = 0; s < hd->n_fp; s++) {
        int32_t p = hd->pend[s];
        if (p < 0) continue;
        int nf = remap[p / KV_MAX_GROUP];
        if (nf < 0) {
            if (nf <= -2 && hd->qscore && hd->score) // carry the token's score into the packed group
                hd->qscore[(size_t)(-2 - nf) * kv->p.group + p % KV_MAX_GROUP] = hd->score[s];
            kv->tmp_i[n_rm++] = s;
            hd->pend[s] = -1;
        } else {
            hd->pend[s] = nf * KV_MAX_GROUP + p % KV_MAX_GROUP;
        }
    }
    free(remap);
    return kv_fp_remove(kv, hd, kv->tmp_i, n_rm);
oom:
    free(remap);
    return -1;
}

// Quantises the keys of fill group f's n_filled tokens (slot order) into the group.
static void quantize_keys(struct kv_cache *kv, struct kv_head *hd, int f) {
    int32_t slots[KV_MAX_GROUP];
    struct kv_slot src[KV_MAX_GROUP];
    fill_slots(hd, f, slots);
    struct kv_group_meta *m = &hd->fm[f];
    int n = m->n_filled;
    for (int t = 0; t < n; t++) src[t] = kv_fp_slot(hd, slots[t]);
    struct kv_qjob job = {.kind = KV_QJOB_KEYS, .group = hd->fb[f], .t = 0, .n_src = n, .src = src};
    run_job(kv, &job);
    m->kdone = 1;
    m->live = n == 32 ? 0xffffffffu : ((1u << n) - 1);
}

// Evicting an fp token that is queued in a fill group: keep the group consistent.
int kv_kivi_kill_fp(struct kv_cache *kv, struct kv_head *hd, int slot) {
    int32_t p = hd->pend[slot];
    if (p < 0) return 0;
    int f = p / KV_MAX_GROUP, t = p % KV_MAX_GROUP;
    struct kv_group_meta *m = &hd->fm[f];
    hd->pend[slot] = -1;
    if (m->kdone) { // block mode: keys already coded, just mark the slot dead
        kv_group_set_live(kv, hd->fb[f], m, m->live & ~(1u << t));
        m->vdone &= ~(1u << t);
        return 0;
    }
    // ours: slots 0..n_filled-1 are dense; move the last queued token into the hole
    int last = m->n_filled - 1;
    if (t != last) {
        int32_t slots[KV_MAX_GROUP];
        fill_slots(hd, f, slots);
        struct kv_qjob job = {.kind = KV_QJOB_COPY_V, .group = hd->fb[f], .t = t, .src_group = hd->fb[f],
                              .t_src = last};
        run_job(kv, &job);
        m->pos_off[t] = m->pos_off[last];
        m->flags[t] = m->flags[last];
        if (slots[last] >= 0) hd->pend[slots[last]] = f * KV_MAX_GROUP + t;
    }
    m->n_filled--;
    m->vdone &= ~(1u << last);
    kv_group_set_live(kv, hd->fb[f], m, m->live & ~(1u << last));
    return 0;
}

static void value_job(struct kv_cache *kv, struct kv_head *hd, int f, int t, int s) {
    struct kv_slot src = kv_fp_slot(hd, s);
    struct kv_qjob job = {.kind = KV_QJOB_VALUE, .group = hd->fb[f], .t = t, .n_src = 1, .src = &src};
    run_job(kv, &job);
    struct kv_group_meta *m = &hd->fm[f];
    m->live |= 1u << t;
    m->vdone |= 1u << t;
}

static int cmp_by_pos(const void *a, const void *b, void *ud) {
    const int32_t *pos = ud;
    int32_t x = pos[*(const int32_t *)a], y = pos[*(const int32_t *)b];
    return (x > y) - (x < y);
}

static int commit_ours(struct kv_cache *kv, struct kv_head *hd) {
    int G = kv->p.group;
    int limit = kv->newest - kv->p.residual;
    int n = 0;
    for (int s = 0; s < hd->n_fp; s++)
        if (hd->pend[s] < 0 && hd->pos[s] <= limit) kv->tmp_i[n++] = s;
    if (!n) return 0;
    qsort_r(kv->tmp_i, (size_t)n, sizeof(int32_t), cmp_by_pos, hd->pos);
    int *todo = malloc((size_t)n * sizeof *todo);
    if (!todo) return -1;
    memcpy(todo, kv->tmp_i, (size_t)n * sizeof *todo);
    // queue values first (fp slot numbers stay put until complete_ready)
    for (int i = 0; i < n; i++) {
        int s = todo[i];
        int f = hd->n_fill - 1;
        if (f >= 0 && hd->fm[f].kdone) f = -1;
        if (f >= 0 && hd->fm[f].n_filled > 0 && hd->pos[s] - hd->fm[f].pos_base > 65535) {
            quantize_keys(kv, hd, f); // pos_off would overflow: close the group early
            f = -1;
        }
        if (f < 0 && (f = new_fill_group(kv, hd)) < 0) {
            free(todo);
            return -1;
        }
        struct kv_group_meta *m = &hd->fm[f];
        int t = m->n_filled++;
        if (t == 0) m->pos_base = hd->pos[s];
        m->pos_off[t] = (uint16_t)(hd->pos[s] - m->pos_base);
        m->flags[t] = hd->flags[s];
        hd->pend[s] = f * KV_MAX_GROUP + t;
        value_job(kv, hd, f, t, s);
        if (m->n_filled == G) quantize_keys(kv, hd, f);
    }
    free(todo);
    return complete_ready(kv, hd);
}

static int commit_block(struct kv_cache *kv, struct kv_head *hd) {
    int G = kv->p.group, R = kv->p.residual;
    // keys: flush the oldest R exact keys while the residual holds R of them
    for (;;) {
        int n = 0;
        for (int s = 0; s < hd->n_fp; s++)
            if (hd->pend[s] < 0) kv->tmp_i[n++] = s;
        if (n < R) break;
        qsort_r(kv->tmp_i, (size_t)n, sizeof(int32_t), cmp_by_pos, hd->pos);
        for (int g0 = 0; g0 < R; g0 += G) {
            int f = new_fill_group(kv, hd);
            if (f < 0) return -1;
            struct kv_group_meta *m = &hd->fm[f];
            m->pos_base = hd->pos[kv->tmp_i[g0]];
            for (int t = 0; t < G; t++) {
                int s = kv->tmp_i[g0 + t];
                m->pos_off[t] = (uint16_t)(hd->pos[s] - m->pos_base);
                m->flags[t] = hd->flags[s];
                hd->pend[s] = f * KV_MAX_GROUP + t;
            }
            m->n_filled = G;
            quantize_keys(kv, hd, f);
        }
    }
    // values: quantise queued tokens that left the window
    int limit = kv->newest - R;
    for (int s = 0; s < hd->n_fp; s++) {
        int32_t p = hd->pend[s];
        if (p < 0 || hd->pos[s] > limit) continue;
        int f = p / KV_MAX_GROUP, t = p % KV_MAX_GROUP;
        if (!(hd->fm[f].vdone & (1u << t))) value_job(kv, hd, f, t, s);
    }
    return complete_ready(kv, hd);
}

int kv_kivi_commit(struct kv_cache *kv, int layer, int h) {
    struct kv_head *hd = kv_head_at(kv, layer, h);
    if (kv_ensure_scratch(kv, (size_t)hd->n_fp + 1)) return -1;
    return kv->p.flush == KV_FLUSH_BLOCK ? commit_block(kv, hd) : commit_ours(kv, hd);
}
