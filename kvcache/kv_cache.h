// kvcache/kv_cache.h — the KV cache: per layer x KV head token storage in counted blocks, head policies
// (full, FastGen hybrids, SnapKV/PyramidKV selection, H2O, StreamingLLM), optional KIVI packing.
// The cache plans on the host (which token lives where, what to evict); the backend moves the bytes.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn.h"
#include "kvcache/kv_stats.h"

// Per-token flags the policies read (set by the caller from the tokenizer).
enum kv_tok_flag {
    KV_TOK_SPECIAL = 1, // BOS/EOS, control tokens, chat-template markers
    KV_TOK_PUNCT = 2,   // all-punctuation piece
};

struct kv_cache_params {
    int n_layer, n_head_kv, head_dim;
    int n_head;              // query heads (for the GQA group mean in profiling)
    int n_ctx;               // positions the cache must be able to hold
    const int *layer_window; // (n_layer) sliding window per layer, 0 = global; NULL = all global
    int policy;              // enum kv_policy_kind
    float recovery;          // FastGen T
    float local_ratio, heavy_ratio; // FastGen r_l, r_f
    int bits;                // 16 (off), 4 or 2
    int group, residual;     // KIVI G and R
    int flush;               // enum kv_flush_mode (app/params.h): 0 ours, 1 the paper's block flush
    int budget;              // snapkv/pyramidkv/h2o/local: average kept tokens per layer (0 = auto)
    float pyramid_beta;
    int obs_window;          // snapkv/pyramidkv observation window
    int sink_tokens;         // local policy: attention sinks kept
};

// Fills the defaults SPEC §1 lists (policy full, T 0.95, r 0.3, bits 16, G 32, R 128, beta 20, w 8).
void kv_cache_params_default(struct kv_cache_params *p);

struct kv_cache;

// Creates an empty cache whose block memory comes from `be`. NULL + one-line err on bad params.
struct kv_cache *kv_cache_init(struct kn_backend *be, const struct kv_cache_params *p, char *err,
                               size_t errlen);
void kv_cache_free(struct kv_cache *kv);
// Forgets every token; returns all blocks to the pools (and the pools' memory to the backend).
void kv_cache_clear(struct kv_cache *kv);
const struct kv_cache_params *kv_cache_get_params(const struct kv_cache *kv);

// ---- The forward pass drives the cache in this order, per micro-batch of n_tok tokens: --------------
// 0. kv_cache_begin_prompt before the first micro-batch of a prompt.
// 1. kv_cache_reserve: room for n_tok new tokens (positions pos[], flags[]) in every layer and head.
// 2. per layer: kv_cache_slots -> backend kv_store of this batch's K/V; kv_cache_view -> attention
//    (with kv_cache_probs if it returns a buffer); then kv_cache_observe with those probabilities.
// 3. kv_cache_commit(phase): evictions, profiling decisions, KIVI packing.
enum kv_phase {
    KV_PHASE_PROMPT_CHUNK, // part of a prompt; more of it follows (no policy evictions yet)
    KV_PHASE_PROMPT_END,   // the last chunk of a prompt (a user turn): profile, choose, evict
    KV_PHASE_DECODE,       // one generated token
};
// Starts a prompt (a user turn) that will bring the context to total_len tokens: FastGen profiles it,
// SnapKV/PyramidKV select from it.
void kv_cache_begin_prompt(struct kv_cache *kv, int total_len);
// 0 ok; -1 when the context is full (err says so).
int kv_cache_reserve(struct kv_cache *kv, int n_tok, const int32_t *pos, const uint8_t *flags, char *err,
                     size_t errlen);
// Destination slots of the reserved tokens for `layer`: (n_tok * n_head_kv), token-major.
const struct kv_slot *kv_cache_slots(struct kv_cache *kv, int layer);
// The layer's view for attention (valid until the next reserve/commit).
const struct kv_layer_view *kv_cache_view(struct kv_cache *kv, int layer);
// A backend buffer for this layer's attention probabilities (n_head, n_tok, *stride) when the cache
// wants them (profiling, heavy-hitter scores, SnapKV); NULL when not.
float *kv_cache_probs(struct kv_cache *kv, int layer, int *stride);
// Feeds the probabilities attention wrote into the kv_cache_probs buffer (q_pos: host (n_tok)).
int kv_cache_observe(struct kv_cache *kv, int layer, const int32_t *q_pos);
// Applies the policies after a micro-batch. 0 ok, negative on backend failure.
int kv_cache_commit(struct kv_cache *kv, int phase);

// Tokens seen (next position) and context capacity.
int kv_cache_n_past(const struct kv_cache *kv);
// Fills a snapshot (allocating its arrays when needed). 0 ok, -1 oom.
int kv_cache_stats(const struct kv_cache *kv, struct kv_stats *out);
// Blocks currently taken from the pools (fp + packed); for tests of real memory release.
uint64_t kv_cache_blocks_in_use(const struct kv_cache *kv);
