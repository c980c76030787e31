// kvcache/kv_internal.h — the cache's private structures, shared by the kvcache/*.c files only.
#pragma once
#include <stdint.h>

#include "kvcache/kv_cache.h"
#include "kvcache/kv_pool.h"

// FastGen candidates in the paper's order: special, +punct, +frequent, +local, full.
#define KV_N_CAND 5
extern const uint32_t kv_fastgen_cands[KV_N_CAND];

// Host mirror of a packed group (kept lean: it is counted in kv_bytes).
struct kv_group_meta {
    uint32_t live;   // slots holding a live token
    uint32_t vdone;  // slots whose value is quantised
    int16_t kdone;   // keys quantised (per channel over the group)
    int16_t n_filled; // slots assigned so far
    int32_t pos_base;
    uint16_t pos_off[KV_MAX_GROUP];
    uint8_t flags[KV_MAX_GROUP];
};
static inline int32_t kv_gm_pos(const struct kv_group_meta *m, int t) { return m->pos_base + m->pos_off[t]; }

// FastGen profiling sums for one head over the current prompt.
struct kv_prof {
    double mass[KV_N_CAND];      // recovered attention summed over rows (group mean)
    double *per_q;               // (n_group * KV_N_CAND) per query head sums
    int64_t rows;
};

struct kv_head {
    // full-precision region: slots [0, n_fp), slot s in block fpb[s / 32] at s % 32
    int n_fp, n_fpb, cap_fpb;
    void **fpb;
    int32_t *pos;    // (cap_fpb * 32) host mirror of positions
    uint8_t *flags;  // (cap_fpb * 32) enum kv_tok_flag bits (+ KV_TOKF_SELECTED)
    float *score;    // (cap_fpb * 32) accumulated attention; NULL when no policy needs scores
    int32_t *pend;   // (cap_fpb * 32) KIVI: filling group * KV_MAX_GROUP + slot, or -1; NULL when off
    // packed region: complete groups (in the view)
    int n_q, cap_q;
    void **qb;
    struct kv_group_meta *qm;
    float *qscore;      // (cap_q * group) accumulated attention of packed tokens; NULL when unused
    // groups still being filled (tokens also live in the fp region)
    int n_fill, cap_fill;
    void **fb;
    struct kv_group_meta *fm;
    // policy
    uint32_t comps;     // enum kv_comp
    int local_w;        // LOCAL: tokens with pos > newest - local_w are kept
    int heavy_k;        // FREQ with a fixed count (h2o); 0 = heavy_ratio * n_past
    int sinks;          // LOCAL policy: positions < sinks kept
    int32_t select_end; // SELECT: tokens with pos >= select_end (decoded later) are kept
    float recovery, recovery_min;
    struct kv_prof prof;
};

#define KV_TOKF_SELECTED 0x80 // SELECT: chosen at prefill

struct kv_cache {
    struct kv_cache_params p;
    struct kn_backend *be;
    int host_mem;        // backend memory is host-addressable
    int n_group;         // query heads per KV head
    int needs_scores;    // some policy may use accumulated attention
    int profiling;       // FastGen: profiling the current prompt
    struct kv_qfmt qf;
    struct kv_pool fp_pool, q_pool;
    struct kv_head *heads;         // (n_layer * n_head_kv)
    int *window;                   // (n_layer)
    int n_past;                    // next position
    int newest;                    // newest position stored (-1 empty)
    int n_special, n_punct;        // tokens in context flagged special / punct-but-not-special (budgets)
    int prompt_start;              // first position of the prompt being processed
    int prompt_total;              // context length once the prompt is in (FastGen's L)
    // reservation of the current micro-batch
    int n_res;
    int32_t *res_pos;              // (ubatch cap)
    uint8_t *res_flags;
    int cap_res;
    struct kv_slot *slots;         // (cap_res * n_head_kv) for one layer
    // views
    struct kv_layer_view view;
    struct kv_head_view *hviews;   // (n_head_kv)
    // attention probabilities
    float *probs_dev;              // backend buffer
    size_t probs_cap;              // floats
    float *probs_host;             // host copy when the backend is not host memory
    size_t probs_host_cap;
    int probs_stride, probs_layer_ntok;
    // decode with heavy-hitter scores on a device: every layer's probabilities of the step in one buffer,
    // read back by one download at commit instead of one synchronising download per layer
    size_t *step_at;               // (n_layer) offset of the layer's probabilities in probs_dev (floats)
    int *step_stride;              // (n_layer) its row stride; 0: the layer wants none
    int step_ready;                // 1: the step's layout is set (its layers' attention writes there);
                                   // -1: not used this step; 0: not decided yet
    size_t step_used;              // floats of probs_dev the step uses
    // scratch for policies
    float *tmp_f;
    int32_t *tmp_i;
    size_t tmp_cap;
    struct kv_slot *mv_src, *mv_dst;
    size_t mv_cap;
    struct kv_qjob *jobs;
    struct kv_slot *job_src;
    size_t jobs_cap, job_src_cap;
    // stats
    uint64_t host_meta_bytes;
    int *layer_budget;             // (n_layer) pyramid/snapkv budgets, or NULL
    // SnapKV / PyramidKV: attention of the prompt's last w queries per key position (transient, not counted)
    int sel_active;                // 1: the prompt in progress is selected at its end; -1: no score memory
    float *sel_score;              // (n_layer * n_head_kv, n_ctx), allocated at the first prompt
};

static inline struct kv_head *kv_head_at(struct kv_cache *kv, int layer, int h) {
    return &kv->heads[layer * kv->p.n_head_kv + h];
}
static inline struct kv_slot kv_fp_slot(const struct kv_head *hd, int s) {
    struct kv_slot r;
    r.block = hd->fpb[s / KV_FP_BLOCK];
    r.slot = s % KV_FP_BLOCK;
    return r;
}

// kv_evict.c
int kv_evict_head(struct kv_cache *kv, int layer, int h, int phase);
int kv_fp_remove(struct kv_cache *kv, struct kv_head *hd, const int32_t *slots, int n);
void kv_fp_meta_shrink(struct kv_cache *kv, struct kv_head *hd);
int kv_ensure_scratch(struct kv_cache *kv, size_t n);
int kv_ensure_moves(struct kv_cache *kv, size_t n);
// kv_kivi.c
int kv_kivi_commit(struct kv_cache *kv, int layer, int h);
int kv_kivi_kill_fp(struct kv_cache *kv, struct kv_head *hd, int slot);
void kv_group_set_live(struct kv_cache *kv, void *block, struct kv_group_meta *m, uint32_t live);
// kv_profile.c
void kv_profile_begin(struct kv_cache *kv);
void kv_profile_rows(struct kv_cache *kv, int layer, const float *probs, int n_tok, int stride,
                     const int32_t *q_pos);
void kv_profile_choose(struct kv_cache *kv);
// kv_select.c (SnapKV / PyramidKV)
int kv_select_avg_budget(const struct kv_cache *kv); // C: --kv-budget, or n_ctx / 4
int kv_select_window(const struct kv_cache *kv);     // w: --obs-window
// Prefix budgets per layer (kept besides the w-token window) for n_prefix tokens before the window:
// SnapKV budget - w everywhere; PyramidKV linear from 2K - K/beta (layer 0) to K/beta (top), K = budget - w,
// summing to n_layer * K; everything when n_prefix <= K; the bottom clamped to n_prefix (top raised to match).
void kv_select_budgets(int n_layer, int pyramid, int budget, int window, float beta, int n_prefix, int *out);
void kv_select_plan(struct kv_cache *kv);            // layer_budget for a prompt filling the context
int kv_select_begin(struct kv_cache *kv);            // at begin_prompt; -1 out of memory
int kv_select_wants_probs(const struct kv_cache *kv); // this micro-batch holds observation rows
void kv_select_rows(struct kv_cache *kv, int layer, const float *probs, int n_tok, int stride,
                    const int32_t *q_pos);
int kv_select_choose(struct kv_cache *kv);           // at PROMPT_END, before evictions; -1 out of memory
