// kvcache/kv_stats.h — plain-data snapshot of the KV cache for the dashboard and JSON (SPEC §7).
// A head's policy is a set of components; FastGen's hybrids are unions of them.
#pragma once
#include <stddef.h>
#include <stdint.h>

enum kv_comp {
    KV_C_SPECIAL = 1 << 0, // BOS/EOS, control tokens, template markers, the first token (attention sink)
    KV_C_PUNCT = 1 << 1,   // tokens whose piece is all punctuation
    KV_C_FREQ = 1 << 2,    // heavy hitters: largest accumulated attention
    KV_C_LOCAL = 1 << 3,   // the most recent tokens
    KV_C_FULL = 1 << 4,    // everything
    KV_C_SELECT = 1 << 5,  // a set chosen once at prefill (SnapKV / PyramidKV), decoded tokens appended
    KV_C_WINDOW = 1 << 6,  // the architecture's sliding window (gemma3 local layers)
};

enum kv_policy_kind { // --kv-policy
    KV_POLICY_FULL, KV_POLICY_FASTGEN, KV_POLICY_PYRAMIDKV, KV_POLICY_SNAPKV, KV_POLICY_H2O, KV_POLICY_LOCAL,
    KV_POLICY_COUNT,
};

struct kv_head_stats {
    uint32_t comps;        // enum kv_comp bits of this head's policy
    int32_t retained;      // tokens held
    int32_t budget;        // tokens the policy allows now (-1 = unbounded)
    float recovery;        // attention recovered at the last profile (mean over the group), -1 unknown
    float recovery_min;    // min over the group's query heads, -1 unknown
    uint64_t bytes;        // bytes this head holds (codes, scales, residual, metadata)
};

struct kv_stats {
    int n_layer, n_head_kv, head_dim;
    int n_ctx;             // context capacity
    int n_past;            // tokens in the context (positions used)
    int policy;            // enum kv_policy_kind
    int bits;              // 16, 4 or 2
    float recovery_target; // FastGen T
    uint64_t kv_bytes;       // all bytes the cache holds (sum of the parts below)
    uint64_t kv_bytes_full;  // fp16 K+V for every token in context (sliding layers: their window)
    uint64_t bytes_fp;       // full-precision slots (K, V, positions), incl. the KIVI residual
    uint64_t bytes_codes;    // packed codes
    uint64_t bytes_scales;   // fp16 scales and zeros
    uint64_t bytes_meta;     // positions of packed tokens, host metadata (flags, scores), live masks
    uint64_t pool_blocks;    // blocks in use (fp + packed)
    uint64_t pool_bytes_reserved; // bytes the pools hold from the backend, used or free
    int64_t retained_tokens; // sum over layers and heads
    int n_heads_by_comps[128]; // histogram over `comps` values (index = comps & 127)
    int *layer_budget;       // (n_layer) PyramidKV/SnapKV budgets; NULL otherwise
    struct kv_head_stats *heads; // (n_layer * n_head_kv), layer-major
};

// Allocates the arrays of a snapshot for n_layer x n_head_kv; 0 ok, -1 out of memory.
int kv_stats_alloc(struct kv_stats *s, int n_layer, int n_head_kv);
void kv_stats_release(struct kv_stats *s);
// Deep copy (dst must be allocated for the same shape, or is (re)allocated). 0 ok, -1 oom.
int kv_stats_copy(struct kv_stats *dst, const struct kv_stats *src);
// Short name of a policy's components, e.g. "S+P+F" or "full"; glyph for the dashboard grid.
const char *kv_comps_name(uint32_t comps);
char kv_comps_glyph(uint32_t comps);
const char *kv_policy_name(int policy);
int kv_policy_from_name(const char *name); // -1 when unknown
