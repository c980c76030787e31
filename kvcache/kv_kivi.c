// kvcache/kv_kivi.c — KIVI packing inside the cache (SPEC §4, §5): the R newest tokens stay exact; a
// token leaving that window (and surviving its head's policy) has its value quantised per token at once
// and its key queued; every G queued keys become one per-channel group ("ours"). --kv-flush block gives
// the paper's variant: keys are quantised R at a time when the residual fills. Packed groups that evictions
// leave sparse are merged into fewer groups (compact_packed).
#include <stdlib.h>
#include <string.h>

#include "app/params.h"
#include "kvcache/kv_internal.h"
#include "kvcache/kv_quant_math.h"

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
    for (int t = 0; t < KV_MAX_GROUP; t++)
        out[t] = -1;
    for (int s = 0; s < hd->n_fp; s++) {
        int32_t p = hd->pend[s];
        if (p >= 0 && p / KV_MAX_GROUP == f) out[p % KV_MAX_GROUP] = s;
    }
}

// Ready to leave the fill list: keys quantised and every live value too, or (ours) every queued token
// evicted.
static int group_ready(const struct kv_group_meta *m) {
    return m->kdone ? (m->vdone & m->live) == m->live : m->n_filled == 0;
}

// Room for n packed groups in the head's arrays (and their score slots when a policy needs scores).
static int grow_packed(struct kv_cache *kv, struct kv_head *hd, int n) {
    if (n <= hd->cap_q) return 0;
    int cap = hd->cap_q ? 2 * hd->cap_q : 4;
    while (cap < n)
        cap *= 2;
    void **qb = realloc(hd->qb, (size_t)cap * sizeof *qb);
    if (!qb) return -1;
    hd->qb = qb;
    struct kv_group_meta *qm = realloc(hd->qm, (size_t)cap * sizeof *qm);
    if (!qm) return -1;
    hd->qm = qm;
    if (kv->needs_scores) {
        float *qs = realloc(hd->qscore, (size_t)cap * kv->p.group * sizeof *qs);
        if (!qs) return -1;
        hd->qscore = qs;
    }
    hd->cap_q = cap;
    return 0;
}

// Moves every ready fill group to the complete list (or frees it when all its tokens died), drops
// their tokens from the fp region and renumbers the queue references of the groups that remain.
// Scratch: kv->tmp_i holds the removal list in [0, n_fp) and the group renumbering after it.
static int complete_ready(struct kv_cache *kv, struct kv_head *hd) {
    int n_fill = hd->n_fill, k = 0, any = 0;
    if (kv_ensure_scratch(kv, (size_t)hd->n_fp + (size_t)n_fill + 1)) return -1;
    int32_t *remap = kv->tmp_i + hd->n_fp;
    int n_done = 0; // groups about to be packed: room first, so that a failure leaves the lists intact
    for (int f = 0; f < n_fill; f++)
        n_done += group_ready(&hd->fm[f]) && hd->fm[f].live != 0;
    if (grow_packed(kv, hd, hd->n_q + n_done)) return -1;
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
        hd->qb[hd->n_q] = hd->fb[f];
        hd->qm[hd->n_q] = hd->fm[f];
        if (hd->qscore) // slots without a live token carry no score
            for (int t = 0; t < kv->p.group; t++)
                hd->qscore[(size_t)hd->n_q * kv->p.group + t] = 0.0f;
        remap[f] = -2 - hd->n_q; // completed into packed group n_q
        hd->n_q++;
    }
    hd->n_fill = k;
    if (!any) return 0;
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
    return kv_fp_remove(kv, hd, kv->tmp_i, n_rm);
}

// Quantises the keys of fill group f's n_filled tokens (slot order) into the group; slots[t] is the fp slot
// of group slot t (fill_slots finds them when the caller does not know them).
static void quantize_keys(struct kv_cache *kv, struct kv_head *hd, int f, const int32_t *slots) {
    struct kv_slot src[KV_MAX_GROUP];
    struct kv_group_meta *m = &hd->fm[f];
    int n = m->n_filled;
    for (int t = 0; t < n; t++)
        src[t] = kv_fp_slot(hd, slots[t]);
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
        struct kv_qjob job = {
            .kind = KV_QJOB_COPY_V, .group = hd->fb[f], .t = t, .src_group = hd->fb[f], .t_src = last};
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
    qsort_r(kv->tmp_i, (size_t)n, sizeof(int32_t), cmp_by_pos, hd->pos);
    // fp slots of the filling group's tokens (found once; then tracked as tokens join)
    int32_t slots[KV_MAX_GROUP];
    int cur = hd->n_fill - 1;
    if (n && cur >= 0 && !hd->fm[cur].kdone) fill_slots(hd, cur, slots);
    // queue values first (fp slot numbers stay put until complete_ready, which reuses tmp_i)
    for (int i = 0; i < n; i++) {
        int s = kv->tmp_i[i];
        int f = hd->n_fill - 1;
        if (f >= 0 && hd->fm[f].kdone) f = -1;
        if (f >= 0 && hd->fm[f].n_filled > 0 && hd->pos[s] - hd->fm[f].pos_base > 65535) {
            quantize_keys(kv, hd, f, slots); // pos_off would overflow: close the group early
            f = -1;
        }
        if (f < 0 && (f = new_fill_group(kv, hd)) < 0) return -1;
        struct kv_group_meta *m = &hd->fm[f];
        int t = m->n_filled++;
        if (t == 0) m->pos_base = hd->pos[s];
        m->pos_off[t] = (uint16_t)(hd->pos[s] - m->pos_base);
        m->flags[t] = hd->flags[s];
        hd->pend[s] = f * KV_MAX_GROUP + t;
        slots[t] = s;
        value_job(kv, hd, f, t, s);
        if (m->n_filled == G) quantize_keys(kv, hd, f, slots);
    }
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
        // groups of G by position; one closes early where positions jump by more than pos_off holds
        for (int i = 0; i < R;) {
            int f = new_fill_group(kv, hd);
            if (f < 0) return -1;
            struct kv_group_meta *m = &hd->fm[f];
            m->pos_base = hd->pos[kv->tmp_i[i]];
            int t = 0;
            for (; i < R && t < G && hd->pos[kv->tmp_i[i]] - m->pos_base <= 65535; t++, i++) {
                int s = kv->tmp_i[i];
                m->pos_off[t] = (uint16_t)(hd->pos[s] - m->pos_base);
                m->flags[t] = hd->flags[s];
                hd->pend[s] = f * KV_MAX_GROUP + t;
            }
            m->n_filled = (int16_t)t;
            quantize_keys(kv, hd, f, kv->tmp_i + i - t);
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

// ---- compaction of sparse packed groups (SPEC §5) -------------------------------------------------
// Evictions inside packed groups only clear live bits. Once a head's packed groups hold at least G dead
// slots, the live tokens of its sparsest groups are merged into as few groups as the head's live total
// allows (fewest source groups that reach that count). Values are per token: their codes, scales and
// zeros are copied exactly. Keys are per channel over a group: the merged tokens' dequantised keys are
// quantised again over the new group, which adds at most s'/2 per element (s' = the merged group's channel
// range / (2^B - 1), plus fp16 rounding of s' and z'); a group whose channel range does not grow keeps its
// codes exactly. The work runs on the host over downloaded blocks with the kernels' own arithmetic
// (kv_quant_math.h), so no backend has a job to mirror; it is rare (once per G evicted packed tokens).

struct merge_tok {
    int32_t pos;
    int16_t src, t; // index among the downloaded source groups, slot there
};

static int cmp_merge_tok(const void *a, const void *b) {
    int32_t x = ((const struct merge_tok *)a)->pos, y = ((const struct merge_tok *)b)->pos;
    return (x > y) - (x < y);
}

static int cmp_groups_by_live(const void *a, const void *b, void *ud) {
    const struct kv_group_meta *qm = ud;
    const struct kv_group_meta *x = &qm[*(const int32_t *)a], *y = &qm[*(const int32_t *)b];
    int lx = __builtin_popcount(x->live), ly = __builtin_popcount(y->live);
    if (lx != ly) return lx - ly;
    return (x->pos_base > y->pos_base) - (x->pos_base < y->pos_base);
}

// Builds merged group `out` (host copy, zeroed) from tokens tok[0..n) of the source groups src[].
static void merge_build(struct kv_qfmt f, void *out, struct kv_group_meta *om, void *const *src,
                        const struct kv_group_meta *sm, const struct merge_tok *tok, int n) {
    const int D = f.D, G = f.G, B = f.B, nvg = D / f.VG;
    memset(om, 0, sizeof *om);
    for (int t = 0; t < n; t++) {
        void *sg = src[tok[t].src];
        int ts = tok[t].t;
        const uint32_t *sc = kvq_vcode(sg, f);
        uint32_t *dc = kvq_vcode(out, f);
        for (int d = 0; d < D; d++)
            kv_code_set(dc, (size_t)t * D + d, B, kv_code_get(sc, (size_t)ts * D + d, B));
        for (int q = 0; q < nvg; q++) {
            kvq_vscale(out, f)[t * nvg + q] = kvq_vscale(sg, f)[ts * nvg + q];
            kvq_vzero(out, f)[t * nvg + q] = kvq_vzero(sg, f)[ts * nvg + q];
        }
        kvq_set_pos(out, f, t, tok[t].pos);
        om->flags[t] = sm[tok[t].src].flags[ts];
    }
    uint32_t *kc = kvq_kcode(out, f);
    for (int d = 0; d < D; d++) {
        float x[KV_MAX_GROUP], mn = 0.0f, mx = 0.0f;
        for (int t = 0; t < n; t++) {
            void *sg = src[tok[t].src];
            uint32_t c = kv_code_get(kvq_kcode(sg, f), (size_t)d * G + tok[t].t, B);
            x[t] =
                kvq_decode(c, kn_half_to_float(kvq_kscale(sg, f)[d]), kn_half_to_float(kvq_kzero(sg, f)[d]));
            if (t == 0 || x[t] < mn) mn = x[t];
            if (t == 0 || x[t] > mx) mx = x[t];
        }
        struct kvq_param p = kvq_param_make(mn, mx, B);
        kvq_kscale(out, f)[d] = p.hs;
        kvq_kzero(out, f)[d] = p.hz;
        for (int t = 0; t < n; t++)
            kv_code_set(kc, (size_t)d * G + t, B, kvq_encode(x[t], p.s, p.z, B));
    }
    om->live = *kvq_live(out);
    om->vdone = om->live;
    om->kdone = 1;
    om->n_filled = (int16_t)n;
    om->pos_base = *kvq_pos_base(out);
    memcpy(om->pos_off, kvq_pos_off(out, f), sizeof om->pos_off);
}

// Cuts n position-sorted tokens into groups of at most G whose positions span at most 65535 (pos_off is
// 16-bit): first[o] is group o's first token, first[n_out] = n. Balanced: as few groups as the count allows,
// evenly filled, so that no merged group is left sparse (it would soon be merged, and its keys quantised,
// again); otherwise greedy. Returns n_out, or -1 when that would take more than max_out groups.
static int plan_cuts(const struct merge_tok *tok, int n, int G, int balanced, int *first, int max_out) {
    int n_out = 0, n_min = (n + G - 1) / G;
    for (int j = 0; j < n; n_out++) {
        if (n_out == max_out) return -1;
        int left = n_min - n_out, cap = balanced && left > 0 ? (n - j + left - 1) / left : G;
        if (cap > G) cap = G;
        first[n_out] = j;
        int e = j + 1;
        while (e < n && e - j < cap && tok[e].pos - tok[j].pos <= 65535)
            e++;
        j = e;
    }
    first[n_out] = n;
    return n_out;
}

static int compact_packed(struct kv_cache *kv, struct kv_head *hd) {
    const int G = kv->p.group, n_q = hd->n_q;
    int live_total = 0;
    for (int g = 0; g < n_q; g++)
        live_total += __builtin_popcount(hd->qm[g].live);
    if (n_q * G - live_total < G) return 0;
    if (kv_ensure_scratch(kv, (size_t)n_q)) return -1;
    int32_t *order = kv->tmp_i;
    for (int g = 0; g < n_q; g++)
        order[g] = g;
    qsort_r(order, (size_t)n_q, sizeof *order, cmp_groups_by_live, hd->qm);
    // fewest sparsest groups whose merge saves as many groups as merging all of them would
    int best = n_q - (live_total + G - 1) / G, k = 0, sum = 0;
    while (k < n_q) {
        sum += __builtin_popcount(hd->qm[order[k]].live);
        k++;
        if (k - (sum + G - 1) / G == best) break;
    }
    size_t bb = kv->q_pool.block_bytes;
    struct merge_tok *tok = malloc((size_t)live_total * sizeof *tok);
    int *first = malloc((size_t)(n_q + 1) * sizeof *first);
    unsigned char *buf = NULL;
    void **src = NULL;
    struct kv_group_meta *sm = NULL;
    float *sc = NULL;
    int rc = -1, n = 0, n_out = -1;
    if (!tok || !first) goto done;
    // the sparsest groups; when their positions are too far apart to share groups (contexts beyond 65536),
    // all groups, cut greedily by position (fewest groups under both limits)
    for (int all = 0; all <= 1 && n_out < 0; all++) {
        if (all) {
            if (k == n_q) break;
            k = n_q;
        }
        n = 0;
        for (int i = 0; i < k; i++) {
            int g = order[i];
            for (int t = 0; t < G; t++)
                if (hd->qm[g].live & (1u << t)) {
                    tok[n].pos = kv_gm_pos(&hd->qm[g], t);
                    tok[n].src = (int16_t)i;
                    tok[n].t = (int16_t)t;
                    n++;
                }
        }
        qsort(tok, (size_t)n, sizeof *tok, cmp_merge_tok);
        n_out = plan_cuts(tok, n, G, 1, first, k - 1);
        if (n_out < 0) n_out = plan_cuts(tok, n, G, 0, first, k - 1);
    }
    if (n_out < 0) { // no group can be saved: leave them as they are
        rc = 0;
        goto done;
    }
    buf = malloc((size_t)2 * k * bb); // k sources, then at most k - 1 merged groups
    src = malloc((size_t)k * sizeof *src);
    sm = malloc((size_t)2 * k * sizeof *sm);
    sc = hd->qscore ? malloc((size_t)n * sizeof *sc) : NULL;
    if (!buf || !src || !sm || (hd->qscore && !sc)) goto done;
    for (int i = 0; i < k; i++) {
        src[i] = buf + (size_t)i * bb;
        sm[i] = hd->qm[order[i]];
        if (kv->be->ops->download(kv->be, src[i], hd->qb[order[i]], bb)) goto done;
    }
    if (sc)
        for (int j = 0; j < n; j++)
            sc[j] = hd->qscore[(size_t)order[tok[j].src] * G + tok[j].t];
    unsigned char *obuf = buf + (size_t)k * bb;
    struct kv_group_meta *om = sm + k;
    for (int o = 0; o < n_out; o++) {
        memset(obuf + (size_t)o * bb, 0, bb);
        merge_build(kv->qf, obuf + (size_t)o * bb, &om[o], src, sm, tok + first[o], first[o + 1] - first[o]);
    }
    // the merged groups take the blocks of the first n_out sources; the other sources are freed
    for (int o = 0; o < n_out; o++) {
        int g = order[o];
        if (kv->be->ops->upload(kv->be, hd->qb[g], obuf + (size_t)o * bb, bb)) goto done;
        hd->qm[g] = om[o];
        if (sc)
            for (int t = 0; t < G; t++)
                hd->qscore[(size_t)g * G + t] = t < first[o + 1] - first[o] ? sc[first[o] + t] : 0.0f;
    }
    for (int i = n_out; i < k; i++) {
        kv_pool_put(&kv->q_pool, hd->qb[order[i]]);
        hd->qb[order[i]] = NULL;
    }
    int w = 0;
    for (int g = 0; g < n_q; g++) {
        if (!hd->qb[g]) continue;
        if (w != g) {
            hd->qb[w] = hd->qb[g];
            hd->qm[w] = hd->qm[g];
            if (hd->qscore)
                memcpy(hd->qscore + (size_t)w * G, hd->qscore + (size_t)g * G, (size_t)G * sizeof(float));
        }
        w++;
    }
    hd->n_q = w;
    rc = 0;
done:
    free(tok);
    free(buf);
    free(src);
    free(sm);
    free(first);
    free(sc);
    return rc;
}

// Halves the packed-group arrays while at most a quarter is used (evictions and compaction free groups; the
// score slots are counted in kv_bytes). A failed shrinking realloc keeps the larger, still valid, block.
static void packed_meta_shrink(struct kv_cache *kv, struct kv_head *hd) {
    while (hd->cap_q > 4 && hd->n_q * 4 <= hd->cap_q) {
        int cap = hd->cap_q / 2;
        void **qb = realloc(hd->qb, (size_t)cap * sizeof *qb);
        if (qb) hd->qb = qb;
        struct kv_group_meta *qm = realloc(hd->qm, (size_t)cap * sizeof *qm);
        if (qm) hd->qm = qm;
        if (hd->qscore) {
            float *qs = realloc(hd->qscore, (size_t)cap * kv->p.group * sizeof *qs);
            if (qs) hd->qscore = qs;
        }
        hd->cap_q = cap;
    }
}

int kv_kivi_commit(struct kv_cache *kv, int layer, int h) {
    struct kv_head *hd = kv_head_at(kv, layer, h);
    if (kv_ensure_scratch(kv, (size_t)hd->n_fp + 1)) return -1;
    int rc = kv->p.flush == KV_FLUSH_BLOCK ? commit_block(kv, hd) : commit_ours(kv, hd);
    if (!rc) rc = compact_packed(kv, hd);
    if (!rc) packed_meta_shrink(kv, hd);
    return rc;
}
