// kvcache/kv_cache.c — cache lifetime, reservation of new tokens, views for attention, commit sequencing.
#include "kvcache/kv_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache/kv_internal.h"

const uint32_t kv_fastgen_cands[KV_N_CAND] = {
    KV_C_SPECIAL,
    KV_C_SPECIAL | KV_C_PUNCT,
    KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ,
    KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL,
    KV_C_FULL,
};

void kv_cache_params_default(struct kv_cache_params *p) {
    memset(p, 0, sizeof *p);
    p->policy = KV_POLICY_FULL;
    p->recovery = 0.95f;
    p->local_ratio = 0.3f;
    p->heavy_ratio = 0.3f;
    p->bits = 16;
    p->group = 32;
    p->residual = 128;
    p->pyramid_beta = 20.0f;
    p->obs_window = 8;
    p->sink_tokens = 4;
}

static int check_params(const struct kv_cache_params *p, char *err, size_t errlen) {
    if (p->n_layer <= 0 || p->n_head_kv <= 0 || p->head_dim <= 0 || p->n_ctx <= 0 || p->n_head <= 0 ||
        p->n_head % p->n_head_kv) {
        snprintf(err, errlen, "kv cache: bad shape (layers %d, heads %d/%d, head_dim %d, ctx %d)", p->n_layer,
                 p->n_head, p->n_head_kv, p->head_dim, p->n_ctx);
        return -1;
    }
    if (p->policy < 0 || p->policy >= KV_POLICY_COUNT) {
        snprintf(err, errlen, "kv cache: unknown policy %d", p->policy);
        return -1;
    }
    if (p->bits != 16 && p->bits != 4 && p->bits != 2) {
        snprintf(err, errlen, "--kv-bits must be 16, 4 or 2 (got %d)", p->bits);
        return -1;
    }
    if (p->bits != 16) {
        if (p->group < 1 || p->group > KV_MAX_GROUP || (p->group * p->bits) % 32) {
            snprintf(err, errlen, "--kv-group must be 16 or 32 for %d-bit codes (got %d)", p->bits, p->group);
            return -1;
        }
        int vg = p->group < p->head_dim ? p->group : p->head_dim;
        if (p->head_dim % vg) {
            snprintf(err, errlen, "--kv-group %d does not divide head_dim %d", p->group, p->head_dim);
            return -1;
        }
        if (p->residual < p->group || p->residual % p->group) {
            snprintf(err, errlen, "--kv-residual must be a positive multiple of --kv-group (%d, got %d)",
                     p->group, p->residual);
            return -1;
        }
    }
    if (!(p->recovery >= 0.0f && p->recovery <= 1.0f)) {
        snprintf(err, errlen, "--recovery must be within [0, 1] (got %g)", (double)p->recovery);
        return -1;
    }
    if (!(p->local_ratio >= 0.0f && p->local_ratio <= 1.0f) || !(p->heavy_ratio >= 0.0f && p->heavy_ratio <= 1.0f)) {
        snprintf(err, errlen, "--local-ratio and --heavy-ratio must be within [0, 1]");
        return -1;
    }
    return 0;
}

struct kv_cache *kv_cache_init(struct kn_backend *be, const struct kv_cache_params *p, char *err, size_t errlen) {
    if (check_params(p, err, errlen)) return NULL;
    struct kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) {
        snprintf(err, errlen, "kv cache: out of memory");
        return NULL;
    }
    kv->p = *p;
    kv->p.layer_window = NULL;
    kv->be = be;
    kv->host_mem = kn_is_cpu(be);
    kv->n_group = p->n_head / p->n_head_kv;
    kv->needs_scores = p->policy == KV_POLICY_FASTGEN || p->policy == KV_POLICY_H2O;
    kv->qf = kv_qfmt_make(p->head_dim, p->group, p->bits == 16 ? 2 : p->bits);
    kv_pool_init(&kv->fp_pool, be, kv_fp_block_bytes(p->head_dim));
    kv_pool_init(&kv->q_pool, be, kv_q_block_bytes(kv->qf));
    int nh = p->n_layer * p->n_head_kv;
    kv->heads = calloc((size_t)nh, sizeof *kv->heads);
    kv->window = calloc((size_t)p->n_layer, sizeof *kv->window);
    kv->step_at = calloc((size_t)p->n_layer, sizeof *kv->step_at);
    kv->step_stride = calloc((size_t)p->n_layer, sizeof *kv->step_stride);
    kv->hviews = calloc((size_t)p->n_head_kv, sizeof *kv->hviews);
    if (!kv->heads || !kv->window || !kv->hviews || !kv->step_at || !kv->step_stride) goto oom;
    for (int l = 0; l < p->n_layer; l++) kv->window[l] = p->layer_window ? p->layer_window[l] : 0;
    if (p->policy == KV_POLICY_SNAPKV || p->policy == KV_POLICY_PYRAMIDKV) {
        kv->layer_budget = calloc((size_t)p->n_layer, sizeof *kv->layer_budget);
        if (!kv->layer_budget) goto oom;
    }
    for (int i = 0; i < nh; i++) {
        struct kv_head *hd = &kv->heads[i];
        hd->comps = KV_C_FULL;
        hd->recovery = hd->recovery_min = -1.0f;
        if (p->policy == KV_POLICY_FASTGEN) {
            hd->prof.per_q = calloc((size_t)kv->n_group * KV_N_CAND, sizeof(double));
            if (!hd->prof.per_q) goto oom;
        }
    }
    kv_cache_clear(kv);
    return kv;
oom:
    kv_cache_free(kv);
    snprintf(err, errlen, "kv cache: out of memory");
    return NULL;
}

// The policy a head starts with (FastGen heads are full until their first profile).
static void kv_head_policy_init(struct kv_cache *kv, struct kv_head *hd, int layer) {
    int budget = kv->p.budget > 0 ? kv->p.budget : kv->p.n_ctx / 4;
    if (budget < 2) budget = 2;
    hd->heavy_k = 0;
    hd->sinks = 0;
    hd->local_w = 0;
    switch (kv->p.policy) {
    case KV_POLICY_H2O: // [H2O]: half heavy hitters (taken outside the recent window, kv_evict.c), half recent
        hd->comps = KV_C_FREQ | KV_C_LOCAL;
        hd->heavy_k = budget / 2;
        hd->local_w = budget - hd->heavy_k;
        break;
    case KV_POLICY_LOCAL: // [StreamingLLM]: sinks + window. Keys keep their original positions: the paper numbers
                          // positions inside the cache to run past the training length, which n_ctx never exceeds
        hd->comps = KV_C_LOCAL;
        hd->sinks = kv->p.sink_tokens < budget ? kv->p.sink_tokens : budget / 2;
        hd->local_w = budget - hd->sinks;
        break;
    case KV_POLICY_SNAPKV:
    case KV_POLICY_PYRAMIDKV:
        hd->comps = KV_C_FULL; // until the first prompt's selection
        break;
    default:
        hd->comps = KV_C_FULL;
        break;
    }
    (void)layer; // sliding windows are enforced for every policy (kv_evict.c)
}

static void head_release(struct kv_cache *kv, struct kv_head *hd) {
    for (int b = 0; b < hd->n_fpb; b++) kv_pool_put(&kv->fp_pool, hd->fpb[b]);
    for (int g = 0; g < hd->n_q; g++) kv_pool_put(&kv->q_pool, hd->qb[g]);
    for (int g = 0; g < hd->n_fill; g++) kv_pool_put(&kv->q_pool, hd->fb[g]);
    hd->n_fp = hd->n_fpb = hd->n_q = hd->n_fill = 0;
}

static void head_free_arrays(struct kv_head *hd) {
    free(hd->fpb);
    free(hd->pos);
    free(hd->flags);
    free(hd->score);
    free(hd->pend);
    free(hd->qb);
    free(hd->qm);
    free(hd->qscore);
    free(hd->fb);
    free(hd->fm);
    free(hd->prof.per_q);
}

void kv_cache_free(struct kv_cache *kv) {
    if (!kv) return;
    if (kv->heads) {
        for (int i = 0; i < kv->p.n_layer * kv->p.n_head_kv; i++) {
            head_release(kv, &kv->heads[i]);
            head_free_arrays(&kv->heads[i]);
        }
    }
    kv_pool_release(&kv->fp_pool);
    kv_pool_release(&kv->q_pool);
    if (kv->probs_dev && !kv->host_mem) kv->be->ops->dealloc(kv->be, kv->probs_dev);
    else free(kv->probs_dev);
    free(kv->probs_host);
    free(kv->heads);
    free(kv->window);
    free(kv->step_at);
    free(kv->step_stride);
    free(kv->hviews);
    free(kv->res_pos);
    free(kv->res_flags);
    free(kv->slots);
    free(kv->tmp_f);
    free(kv->tmp_i);
    free(kv->mv_src);
    free(kv->mv_dst);
    free(kv->jobs);
    free(kv->job_src);
    free(kv->layer_budget);
    free(kv->sel_score);
    free(kv);
}

void kv_cache_clear(struct kv_cache *kv) {
    int nh = kv->p.n_layer * kv->p.n_head_kv;
    for (int i = 0; i < nh; i++) {
        struct kv_head *hd = &kv->heads[i];
        head_release(kv, hd);
        hd->recovery = hd->recovery_min = -1.0f;
        hd->select_end = 0;
        kv_head_policy_init(kv, hd, i / kv->p.n_head_kv);
    }
    // return the spare chunks too: an empty cache holds no memory
    kv->fp_pool.keep_spare = kv->q_pool.keep_spare = 0;
    kv_pool_release(&kv->fp_pool);
    kv_pool_release(&kv->q_pool);
    kv->fp_pool.keep_spare = kv->q_pool.keep_spare = 1;
    kv->n_past = 0;
    kv->newest = -1;
    kv->n_special = kv->n_punct = 0;
    kv->prompt_start = 0;
    kv->n_res = 0;
    kv->step_ready = 0;
    kv->profiling = 0;
    kv->sel_active = 0;
    kv_select_plan(kv);
}

const struct kv_cache_params *kv_cache_get_params(const struct kv_cache *kv) { return &kv->p; }
int kv_cache_n_past(const struct kv_cache *kv) { return kv->n_past; }
uint64_t kv_cache_blocks_in_use(const struct kv_cache *kv) { return kv->fp_pool.n_used + kv->q_pool.n_used; }

static int grow_fp_meta(struct kv_cache *kv, struct kv_head *hd, int need_blocks) {
    if (need_blocks <= hd->cap_fpb) return 0;
    int cap = hd->cap_fpb ? hd->cap_fpb : 4;
    while (cap < need_blocks) cap *= 2;
    size_t ns = (size_t)cap * KV_FP_BLOCK;
    void **fpb = realloc(hd->fpb, (size_t)cap * sizeof *fpb);
    if (!fpb) return -1;
    hd->fpb = fpb;
    int32_t *pos = realloc(hd->pos, ns * sizeof *pos);
    if (!pos) return -1;
    hd->pos = pos;
    uint8_t *fl = realloc(hd->flags, ns);
    if (!fl) return -1;
    hd->flags = fl;
    if (kv->needs_scores) {
        float *sc = realloc(hd->score, ns * sizeof *sc);
        if (!sc) return -1;
        hd->score = sc;
    }
    if (kv->p.bits != 16) {
        int32_t *pe = realloc(hd->pend, ns * sizeof *pe);
        if (!pe) return -1;
        hd->pend = pe;
    }
    hd->cap_fpb = cap;
    return 0;
}

static int grow_res(struct kv_cache *kv, int n) {
    if (n <= kv->cap_res) return 0;
    int cap = kv->cap_res ? kv->cap_res : 64;
    while (cap < n) cap *= 2;
    int32_t *pos = realloc(kv->res_pos, (size_t)cap * sizeof *pos);
    if (!pos) return -1;
    kv->res_pos = pos;
    uint8_t *fl = realloc(kv->res_flags, (size_t)cap);
    if (!fl) return -1;
    kv->res_flags = fl;
    struct kv_slot *sl = realloc(kv->slots, (size_t)cap * kv->p.n_head_kv * sizeof *sl);
    if (!sl) return -1;
    kv->slots = sl;
    kv->cap_res = cap;
    return 0;
}

int kv_cache_reserve(struct kv_cache *kv, int n_tok, const int32_t *pos, const uint8_t *flags, char *err,
                     size_t errlen) {
    if (n_tok <= 0) {
        snprintf(err, errlen, "kv cache: empty batch");
        return -1;
    }
    if (pos[n_tok - 1] >= kv->p.n_ctx || pos[0] < kv->n_past) {
        snprintf(err, errlen, "context is full (%d tokens)", kv->p.n_ctx);
        return -1;
    }
    kv->step_ready = 0; // a step abandoned by an error leaves no layout behind
    if (grow_res(kv, n_tok)) goto oom;
    for (int i = 0; i < n_tok; i++) {
        kv->res_pos[i] = pos[i];
        uint8_t f = flags ? flags[i] : 0;
        if (pos[i] == 0) f |= KV_TOK_SPECIAL; // the first token is the attention sink
        kv->res_flags[i] = f;
    }
    int nh = kv->p.n_layer * kv->p.n_head_kv;
    for (int i = 0; i < nh; i++) {
        struct kv_head *hd = &kv->heads[i];
        int need = hd->n_fp + n_tok;
        int need_blocks = (need + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
        if (grow_fp_meta(kv, hd, need_blocks)) goto oom;
        while (hd->n_fpb < need_blocks) {
            void *b = kv_pool_get(&kv->fp_pool);
            if (!b) {
                snprintf(err, errlen, "kv cache: out of %s memory for the cache", kv->host_mem ? "host" : "device");
                return -1;
            }
            hd->fpb[hd->n_fpb++] = b;
        }
        for (int t = 0; t < n_tok; t++) {
            int s = hd->n_fp + t;
            hd->pos[s] = pos[t];
            hd->flags[s] = kv->res_flags[t];
            if (hd->score) hd->score[s] = 0.0f;
            if (hd->pend) hd->pend[s] = -1;
        }
        hd->n_fp = need;
    }
    for (int i = 0; i < n_tok; i++) {
        if (kv->res_flags[i] & KV_TOK_SPECIAL)
            kv->n_special++;
        else if (kv->res_flags[i] & KV_TOK_PUNCT)
            kv->n_punct++;
    }
    kv->n_res = n_tok;
    kv->n_past = pos[n_tok - 1] + 1;
    kv->newest = pos[n_tok - 1];
    return 0;
oom:
    snprintf(err, errlen, "kv cache: out of host memory");
    return -1;
}

const struct kv_slot *kv_cache_slots(struct kv_cache *kv, int layer) {
    int H = kv->p.n_head_kv;
    for (int h = 0; h < H; h++) {
        struct kv_head *hd = kv_head_at(kv, layer, h);
        int first = hd->n_fp - kv->n_res;
        for (int t = 0; t < kv->n_res; t++) kv->slots[t * H + h] = kv_fp_slot(hd, first + t);
    }
    return kv->slots;
}

// Slots (packed group slots + full-precision tokens) of the layer's largest head.
static int layer_max_slots(struct kv_cache *kv, int layer) {
    int m = 0;
    for (int h = 0; h < kv->p.n_head_kv; h++) {
        const struct kv_head *hd = kv_head_at(kv, layer, h);
        int ns = hd->n_q * kv->p.group + hd->n_fp;
        if (ns > m) m = ns;
    }
    return m;
}

const struct kv_layer_view *kv_cache_view(struct kv_cache *kv, int layer) {
    struct kv_layer_view *v = &kv->view;
    v->n_head_kv = kv->p.n_head_kv;
    v->head_dim = kv->p.head_dim;
    v->bits = kv->p.bits == 16 ? 0 : kv->p.bits;
    v->group = kv->p.group;
    v->window = kv->window[layer];
    v->max_slots = layer_max_slots(kv, layer);
    for (int h = 0; h < kv->p.n_head_kv; h++) {
        struct kv_head *hd = kv_head_at(kv, layer, h);
        struct kv_head_view *hv = &kv->hviews[h];
        hv->n_fp = hd->n_fp;
        hv->n_q = hd->n_q;
        hv->fp_blocks = hd->fpb;
        hv->q_blocks = hd->qb;
    }
    v->heads = kv->hviews;
    return v;
}

static int layer_wants_probs(struct kv_cache *kv, int layer) {
    if (kv->profiling) return 1;
    if (kv->p.policy == KV_POLICY_SNAPKV || kv->p.policy == KV_POLICY_PYRAMIDKV) return kv_select_wants_probs(kv);
    if (!kv->needs_scores) return 0;
    for (int h = 0; h < kv->p.n_head_kv; h++)
        if (kv_head_at(kv, layer, h)->comps & KV_C_FREQ) return 1;
    return 0;
}

// Room for `need` floats in probs_dev (its contents are not kept). 0 ok, -1 out of memory.
static int probs_room(struct kv_cache *kv, size_t need) {
    if (need <= kv->probs_cap) return 0;
    size_t cap = need + need / 4;
    if (kv->host_mem) {
        free(kv->probs_dev);
        kv->probs_dev = malloc(cap * sizeof(float));
    } else {
        if (kv->probs_dev) kv->be->ops->dealloc(kv->be, kv->probs_dev);
        kv->probs_dev = kv->be->ops->alloc(kv->be, cap * sizeof(float), KN_MEM_SCRATCH);
    }
    kv->probs_cap = kv->probs_dev ? cap : 0;
    return kv->probs_dev ? 0 : -1;
}

// Most floats the one-download layout of a step may take (64 MiB); larger steps read back layer by layer.
#define KV_STEP_PROBS_MAX ((size_t)16 << 20)

// Lays out every layer's probabilities of this step in probs_dev, when the cache only accumulates scores
// from them (no profiling or selection, which read each layer as it comes) on a backend whose memory the
// host cannot read. 1: laid out; 0: not applicable or too large (the layers then use the buffer in turn).
// Decided once per step, at its first layer wanting probabilities, so no layer is read both ways.
static int step_layout(struct kv_cache *kv) {
    if (kv->step_ready) return kv->step_ready > 0;
    kv->step_ready = -1;
    if (kv->host_mem || kv->profiling || kv->p.policy == KV_POLICY_SNAPKV || kv->p.policy == KV_POLICY_PYRAMIDKV)
        return 0;
    size_t total = 0;
    for (int l = 0; l < kv->p.n_layer; l++) {
        kv->step_at[l] = total;
        kv->step_stride[l] = 0;
        if (!layer_wants_probs(kv, l)) continue;
        int ms = layer_max_slots(kv, l);
        kv->step_stride[l] = ms;
        total += (size_t)kv->p.n_head * kv->n_res * ms;
    }
    if (total > KV_STEP_PROBS_MAX || probs_room(kv, total)) return 0;
    kv->step_used = total;
    kv->step_ready = 1;
    return 1;
}

float *kv_cache_probs(struct kv_cache *kv, int layer, int *stride) {
    if (!layer_wants_probs(kv, layer)) return NULL;
    if (step_layout(kv)) {
        *stride = kv->step_stride[layer];
        return kv->probs_dev + kv->step_at[layer];
    }
    const struct kv_layer_view *v = kv_cache_view(kv, layer);
    if (probs_room(kv, (size_t)kv->p.n_head * kv->n_res * v->max_slots)) return NULL;
    kv->probs_stride = v->max_slots;
    kv->probs_layer_ntok = kv->n_res;
    *stride = v->max_slots;
    return kv->probs_dev;
}

// Adds the group-mean attention of every row to the heads' accumulated scores.
static void accumulate_scores(struct kv_cache *kv, int layer, const float *probs, int n_tok, int stride) {
    int G = kv->p.group;
    float inv = 1.0f / (float)kv->n_group;
    for (int h = 0; h < kv->p.n_head_kv; h++) {
        struct kv_head *hd = kv_head_at(kv, layer, h);
        if (!hd->score) continue;
        for (int hq = h * kv->n_group; hq < (h + 1) * kv->n_group; hq++) {
            for (int i = 0; i < n_tok; i++) {
                const float *row = probs + ((size_t)hq * n_tok + i) * stride;
                if (hd->qscore)
                    for (int j = 0; j < hd->n_q * G; j++) hd->qscore[j] += inv * row[j];
                const float *fr = row + (size_t)hd->n_q * G;
                for (int s = 0; s < hd->n_fp; s++) hd->score[s] += inv * fr[s];
            }
        }
    }
}

// The first n floats of probs_dev copied into probs_host (grown as needed). 0 ok, -1 on failure.
static int probs_to_host(struct kv_cache *kv, size_t n) {
    if (n > kv->probs_host_cap) {
        free(kv->probs_host);
        kv->probs_host = malloc(n * sizeof(float));
        kv->probs_host_cap = kv->probs_host ? n : 0;
        if (!kv->probs_host) return -1;
    }
    return n ? kv->be->ops->download(kv->be, kv->probs_host, kv->probs_dev, n * sizeof(float)) : 0;
}

// The step's probabilities of every layer, read back at once: scores accumulated layer by layer.
static int observe_step(struct kv_cache *kv) {
    kv->step_ready = 0;
    if (probs_to_host(kv, kv->step_used)) return -1;
    for (int l = 0; l < kv->p.n_layer; l++)
        if (kv->step_stride[l])
            accumulate_scores(kv, l, kv->probs_host + kv->step_at[l], kv->n_res, kv->step_stride[l]);
    return 0;
}

int kv_cache_observe(struct kv_cache *kv, int layer, const int32_t *q_pos) {
    if (kv->step_ready > 0) return 0; // read at commit with the step's other layers
    if (!kv->probs_dev || kv->probs_layer_ntok != kv->n_res) return 0;
    int n_tok = kv->n_res, stride = kv->probs_stride;
    size_t n = (size_t)kv->p.n_head * n_tok * stride;
    const float *probs = kv->probs_dev;
    if (!kv->host_mem) {
        if (probs_to_host(kv, n)) return -1;
        probs = kv->probs_host;
    }
    if (kv->profiling)
        kv_profile_rows(kv, layer, probs, n_tok, stride, q_pos); // accumulates scores row by row itself
    else if (kv->p.policy == KV_POLICY_SNAPKV || kv->p.policy == KV_POLICY_PYRAMIDKV)
        kv_select_rows(kv, layer, probs, n_tok, stride, q_pos);
    else
        accumulate_scores(kv, layer, probs, n_tok, stride);
    return 0;
}

void kv_cache_begin_prompt(struct kv_cache *kv, int total_len) {
    kv->prompt_start = kv->n_past;
    kv->prompt_total = total_len;
    if (kv->p.policy == KV_POLICY_FASTGEN) kv_profile_begin(kv);
    kv_select_begin(kv); // SnapKV/PyramidKV; out of memory is reported by the prompt's last commit
}

int kv_cache_commit(struct kv_cache *kv, int phase) {
    if (kv->step_ready > 0 && observe_step(kv)) return -1;
    if (phase == KV_PHASE_PROMPT_END && kv->profiling) kv_profile_choose(kv);
    if (phase == KV_PHASE_PROMPT_END && kv_select_choose(kv)) return -1;
    for (int l = 0; l < kv->p.n_layer; l++) {
        for (int h = 0; h < kv->p.n_head_kv; h++) {
            if (kv_evict_head(kv, l, h, phase)) return -1;
            if (kv->p.bits != 16 && phase != KV_PHASE_PROMPT_CHUNK && kv_kivi_commit(kv, l, h)) return -1;
        }
    }
    kv->n_res = 0;
    if (phase != KV_PHASE_PROMPT_CHUNK) kv->profiling = 0;
    return 0;
}
