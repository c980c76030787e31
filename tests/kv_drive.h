// tests/kv_drive.h — drives a KV cache on the CPU backend the way the forward pass does, with attention
// probabilities the test constructs (a weight per query/key position pair, normalised over visible keys).
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kn.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_layout.h"

// Unnormalised attention weight of query position qpos (query head hq of KV head kvh) on key position kpos.
typedef float (*kvd_weight_fn)(void *ud, int layer, int kvh, int hq, int qpos, int kpos);

struct kvd {
    struct kn_backend *be;
    struct kv_cache *kv;
    struct kv_cache_params p;
    kvd_weight_fn fn;
    void *ud;
    int n_probs_batches; // micro-batches x layers for which the cache asked for probabilities
    int32_t *spos;       // scratch: position of each slot of one head
    int spos_cap;
};

static inline uint32_t kvd_hash(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

// Positions of a head's slots in attention-probability order (packed groups, then fp); -1 for dead slots.
// Returns the slot count. The pointer stays valid until the next call.
static inline int kvd_slot_pos(struct kvd *d, const struct kv_layer_view *v, int h, int32_t **out) {
    const struct kv_head_view *hv = &v->heads[h];
    int G = v->group, n = hv->n_q * G + hv->n_fp;
    if (n > d->spos_cap) {
        d->spos_cap = n + 64;
        d->spos = realloc(d->spos, (size_t)d->spos_cap * sizeof *d->spos);
    }
    for (int g = 0; g < hv->n_q; g++) {
        const char *b = hv->q_blocks[g];
        int32_t base;
        uint32_t live;
        memcpy(&base, b, 4);
        memcpy(&live, b + 4, 4);
        for (int t = 0; t < G; t++) {
            uint16_t off;
            memcpy(&off, b + kv_q_off_posoff(kv_qfmt_make(v->head_dim, G, v->bits ? v->bits : 2)) + 2 * t, 2);
            d->spos[g * G + t] = (live & (1u << t)) ? base + off : -1;
        }
    }
    for (int s = 0; s < hv->n_fp; s++) {
        int32_t p;
        memcpy(&p, (const char *)hv->fp_blocks[s / KV_FP_BLOCK] + kv_fp_off_pos() + 4 * (s % KV_FP_BLOCK), 4);
        d->spos[hv->n_q * G + s] = p;
    }
    *out = d->spos;
    return n;
}

// 0 ok. The cache is made from p (shape, policy and all).
static inline int kvd_init(struct kvd *d, const struct kv_cache_params *p, kvd_weight_fn fn, void *ud) {
    memset(d, 0, sizeof *d);
    char err[256];
    d->be = kn_cpu_init(1, err, sizeof err);
    if (!d->be) return -1;
    d->p = *p;
    d->kv = kv_cache_init(d->be, p, err, sizeof err);
    if (!d->kv) {
        fprintf(stderr, "kv_cache_init: %s\n", err);
        kn_free(d->be);
        return -1;
    }
    d->fn = fn;
    d->ud = ud;
    return 0;
}

static inline void kvd_free(struct kvd *d) {
    kv_cache_free(d->kv);
    kn_free(d->be);
    free(d->spos);
    memset(d, 0, sizeof *d);
}

// One micro-batch of n tokens at positions pos0.. with flags (or NULL), committed with `phase`.
static inline int kvd_batch(struct kvd *d, int pos0, int n, const uint8_t *flags, int phase) {
    const struct kv_cache_params *p = &d->p;
    int H = p->n_head_kv, D = p->head_dim, nq = p->n_head, ng = nq / H;
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    float *k = malloc((size_t)n * H * D * sizeof *k), *v = malloc((size_t)n * H * D * sizeof *v);
    char err[256];
    int rc = -1;
    if (!pos || !k || !v) goto done;
    for (int i = 0; i < n; i++) pos[i] = pos0 + i;
    for (int i = 0; i < n * H * D; i++) {
        k[i] = (float)(kvd_hash((uint32_t)(pos0 * H * D + i)) % 2001) / 1000.0f - 1.0f;
        v[i] = (float)(kvd_hash((uint32_t)(pos0 * H * D + i) ^ 0x5bd1e995u) % 2001) / 1000.0f - 1.0f;
    }
    if (kv_cache_reserve(d->kv, n, pos, flags, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        goto done;
    }
    for (int l = 0; l < p->n_layer; l++) {
        d->be->ops->kv_store(d->be, kv_cache_slots(d->kv, l), k, v, pos, n, H, D);
        int stride = 0;
        float *probs = kv_cache_probs(d->kv, l, &stride);
        if (!probs) continue;
        d->n_probs_batches++;
        const struct kv_layer_view *view = kv_cache_view(d->kv, l);
        int W = view->window;
        for (int h = 0; h < H; h++) {
            int32_t *sp;
            int ns = kvd_slot_pos(d, view, h, &sp);
            for (int q = 0; q < ng; q++) {
                int hq = h * ng + q;
                for (int i = 0; i < n; i++) {
                    float *row = probs + ((size_t)hq * n + i) * stride;
                    double sum = 0.0;
                    for (int j = 0; j < stride; j++) {
                        int kp = j < ns ? sp[j] : -1;
                        int vis = kp >= 0 && kp <= pos[i] && (W == 0 || kp > pos[i] - W);
                        row[j] = vis ? d->fn(d->ud, l, h, q, pos[i], kp) : 0.0f;
                        sum += row[j];
                    }
                    if (sum > 0)
                        for (int j = 0; j < stride; j++) row[j] = (float)(row[j] / sum);
                }
            }
        }
        if (kv_cache_observe(d->kv, l, pos)) goto done;
    }
    rc = kv_cache_commit(d->kv, phase);
done:
    free(pos);
    free(k);
    free(v);
    return rc;
}

// A whole prompt [pos0, pos0 + n) in micro-batches of `ubatch`, as model_forward feeds it.
static inline int kvd_prompt(struct kvd *d, int pos0, int n, int ubatch, const uint8_t *flags) {
    kv_cache_begin_prompt(d->kv, pos0 + n);
    for (int i = 0; i < n; i += ubatch) {
        int m = n - i < ubatch ? n - i : ubatch;
        int phase = i + m == n ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK;
        if (kvd_batch(d, pos0 + i, m, flags ? flags + i : NULL, phase)) return -1;
    }
    return 0;
}

// Sorted positions head (layer, h) holds into out (cap entries); returns the count.
static inline int kvd_held(struct kvd *d, int layer, int h, int32_t *out, int cap) {
    const struct kv_layer_view *v = kv_cache_view(d->kv, layer);
    int32_t *sp;
    int ns = kvd_slot_pos(d, v, h, &sp), n = 0;
    for (int j = 0; j < ns; j++)
        if (sp[j] >= 0 && n < cap) out[n++] = sp[j];
    for (int i = 1; i < n; i++) // insertion sort: small sets
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int32_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static inline int kvd_has(const int32_t *set, int n, int32_t p) {
    for (int i = 0; i < n; i++)
        if (set[i] == p) return 1;
    return 0;
}
