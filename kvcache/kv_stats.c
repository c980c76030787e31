// kvcache/kv_stats.c — snapshots of the cache for the dashboard and JSON, policy names and glyphs.
// Every byte count comes from what the pools and metadata arrays really hold.
#include "kvcache/kv_stats.h"

#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"

int kv_stats_alloc(struct kv_stats *s, int n_layer, int n_head_kv) {
    if (s->heads && s->n_layer == n_layer && s->n_head_kv == n_head_kv) return 0;
    kv_stats_release(s);
    s->heads = calloc((size_t)n_layer * n_head_kv, sizeof *s->heads);
    s->layer_budget = calloc((size_t)n_layer, sizeof *s->layer_budget);
    if (!s->heads || !s->layer_budget) {
        kv_stats_release(s);
        return -1;
    }
    s->n_layer = n_layer;
    s->n_head_kv = n_head_kv;
    return 0;
}

void kv_stats_release(struct kv_stats *s) {
    free(s->heads);
    free(s->layer_budget);
    s->heads = NULL;
    s->layer_budget = NULL;
}

int kv_stats_copy(struct kv_stats *dst, const struct kv_stats *src) {
    struct kv_head_stats *heads = dst->heads;
    int *lb = dst->layer_budget;
    int same = heads && dst->n_layer == src->n_layer && dst->n_head_kv == src->n_head_kv;
    if (!same) {
        kv_stats_release(dst);
        heads = NULL;
        lb = NULL;
        if (src->heads) {
            heads = calloc((size_t)src->n_layer * src->n_head_kv, sizeof *heads);
            lb = calloc((size_t)src->n_layer, sizeof *lb);
            if (!heads || !lb) {
                free(heads);
                free(lb);
                memset(dst, 0, sizeof *dst);
                return -1;
            }
        }
    }
    *dst = *src;
    dst->heads = heads;
    dst->layer_budget = lb;
    if (src->heads) memcpy(heads, src->heads, (size_t)src->n_layer * src->n_head_kv * sizeof *heads);
    if (src->layer_budget && lb) memcpy(lb, src->layer_budget, (size_t)src->n_layer * sizeof *lb);
    else if (lb) memset(lb, 0, (size_t)src->n_layer * sizeof *lb);
    return 0;
}

const char *kv_comps_name(uint32_t c) {
    if (c & KV_C_FULL) return (c & KV_C_WINDOW) ? "window" : "full";
    c &= ~(uint32_t)KV_C_WINDOW;
    switch (c) {
    case KV_C_SPECIAL: return "special";
    case KV_C_SPECIAL | KV_C_PUNCT: return "special+punct";
    case KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ: return "special+punct+heavy";
    case KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL: return "special+punct+heavy+local";
    case KV_C_FREQ | KV_C_LOCAL: return "heavy+recent (h2o)";
    case KV_C_LOCAL: return "sinks+recent";
    case KV_C_SELECT: return "selected";
    case KV_C_FREQ: return "heavy";
    case KV_C_PUNCT: return "punct";
    default: return "mixed";
    }
}

char kv_comps_glyph(uint32_t c) {
    if (c & KV_C_FULL) return (c & KV_C_WINDOW) ? 'W' : 'F';
    c &= ~(uint32_t)KV_C_WINDOW;
    switch (c) {
    case KV_C_SPECIAL: return 'S';
    case KV_C_SPECIAL | KV_C_PUNCT: return 'P';
    case KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ: return 'H';
    case KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL: return 'L';
    case KV_C_FREQ | KV_C_LOCAL: return 'h';
    case KV_C_LOCAL: return 'l';
    case KV_C_SELECT: return 'x';
    default: return '?';
    }
}

static const char *const policy_names[KV_POLICY_COUNT] = {"full", "fastgen", "pyramidkv", "snapkv", "h2o", "local"};

const char *kv_policy_name(int policy) {
    return policy >= 0 && policy < KV_POLICY_COUNT ? policy_names[policy] : "?";
}

int kv_policy_from_name(const char *name) {
    for (int i = 0; i < KV_POLICY_COUNT; i++)
        if (strcmp(name, policy_names[i]) == 0) return i;
    return -1;
}

// Host metadata bytes per fp slot and per group this cache allocates.
static size_t fp_meta_bytes(const struct kv_cache *kv) {
    return sizeof(int32_t) + 1 + (kv->needs_scores ? sizeof(float) : 0) + (kv->p.bits != 16 ? sizeof(int32_t) : 0);
}

int kv_cache_stats(const struct kv_cache *kv, struct kv_stats *s) {
    const struct kv_cache_params *p = &kv->p;
    if (kv_stats_alloc(s, p->n_layer, p->n_head_kv)) return -1;
    s->head_dim = p->head_dim;
    s->n_ctx = p->n_ctx;
    s->n_past = kv->n_past;
    s->policy = p->policy;
    s->bits = p->bits;
    s->recovery_target = p->recovery;
    s->bytes_fp = s->bytes_codes = s->bytes_scales = s->bytes_meta = 0;
    s->kv_bytes_full = 0;
    s->retained_tokens = 0;
    memset(s->n_heads_by_comps, 0, sizeof s->n_heads_by_comps);
    struct kv_qfmt f = kv->qf;
    size_t fpb = kv_fp_block_bytes(p->head_dim);
    size_t qb = kv_q_block_bytes(f);
    size_t q_codes = kv_q_off_kscale(f) - kv_q_off_kcode(f) + kv_q_off_vscale(f) - kv_q_off_vcode(f);
    size_t q_scales = 2 * (size_t)f.D * 2 + 2 * kv_q_n_vgroups(f) * 2;
    size_t q_meta = qb - q_codes - q_scales; // header, position offsets, alignment padding
    size_t meta_slot = fp_meta_bytes(kv);
    for (int l = 0; l < p->n_layer; l++) {
        int W = kv->window[l];
        int64_t n_full = kv->n_past;
        if (W > 0 && n_full > W) n_full = W;
        for (int h = 0; h < p->n_head_kv; h++) {
            const struct kv_head *hd = &kv->heads[l * p->n_head_kv + h];
            struct kv_head_stats *hs = &s->heads[l * p->n_head_kv + h];
            int live_q = 0;
            for (int g = 0; g < hd->n_q; g++) live_q += __builtin_popcount(hd->qm[g].live);
            int n_groups = hd->n_q + hd->n_fill;
            uint64_t b_fp = (uint64_t)hd->n_fpb * fpb;
            uint64_t b_codes = (uint64_t)n_groups * q_codes;
            uint64_t b_scales = (uint64_t)n_groups * q_scales;
            uint64_t b_meta = (uint64_t)n_groups * (q_meta + sizeof(struct kv_group_meta)) +
                              (uint64_t)hd->cap_fpb * KV_FP_BLOCK * meta_slot +
                              (hd->qscore ? (uint64_t)hd->cap_q * p->group * sizeof(float) : 0);
            hs->comps = hd->comps | (W > 0 ? KV_C_WINDOW : 0);
            hs->retained = hd->n_fp + live_q;
            hs->recovery = hd->recovery;
            hs->recovery_min = hd->recovery_min;
            hs->bytes = b_fp + b_codes + b_scales + b_meta;
            hs->budget = -1;
            if (!(hd->comps & (KV_C_FULL | KV_C_SELECT))) { // SELECT: set by the selection, no bound here
                // an upper bound per component: special and punct tokens of the whole context, the local
                // window (+ sinks), r_f x n_past heavy hitters, and the KIVI staging window
                int64_t b = 0;
                if (hd->comps & KV_C_SPECIAL) b += kv->n_special;
                if (hd->comps & KV_C_PUNCT) b += kv->n_punct;
                if (hd->comps & KV_C_LOCAL) b += hd->local_w + hd->sinks;
                if (hd->comps & KV_C_FREQ) b += hd->heavy_k ? hd->heavy_k : (int64_t)(p->heavy_ratio * kv->n_past);
                if (p->bits != 16) b += p->residual;
                hs->budget = (int32_t)b;
            } else if ((hd->comps & KV_C_SELECT) && kv->layer_budget) {
                // the layer's selection budget plus the tokens decoded since (appended, never evicted)
                int64_t b = kv->layer_budget[l] + (kv->n_past > hd->select_end ? kv->n_past - hd->select_end : 0);
                if (p->bits != 16) b += p->residual;
                hs->budget = (int32_t)b;
            }
            s->bytes_fp += b_fp;
            s->bytes_codes += b_codes;
            s->bytes_scales += b_scales;
            s->bytes_meta += b_meta;
            s->retained_tokens += hs->retained;
            s->kv_bytes_full += (uint64_t)n_full * 4 * p->head_dim;
            s->n_heads_by_comps[hs->comps & 127]++;
        }
        s->layer_budget[l] = kv->layer_budget ? kv->layer_budget[l] : 0;
    }
    s->kv_bytes = s->bytes_fp + s->bytes_codes + s->bytes_scales + s->bytes_meta;
    s->pool_blocks = kv->fp_pool.n_used + kv->q_pool.n_used;
    s->pool_bytes_reserved = kv_pool_reserved_bytes(&kv->fp_pool) + kv_pool_reserved_bytes(&kv->q_pool);
    return 0;
}
