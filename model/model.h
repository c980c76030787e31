// model/model.h — model configuration, weights on a backend, and the forward pass (llama, gemma3).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn.h"
#include "kvcache/kv_cache.h"

#define MODEL_MAX_LAYERS 256

enum model_arch { MODEL_ARCH_LLAMA, MODEL_ARCH_GEMMA3 };

struct model_config {
    int arch;                 // enum model_arch
    char arch_name[32];       // "llama", "gemma3"
    char name[128];           // general.name or the file's base name
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    int n_rot;                // rotated dims per head
    int rope_mode;            // enum kn_rope_mode
    float rope_base, rope_base_local;   // global layers / sliding-window layers
    float rope_scale, rope_scale_local; // position scale (1/linear factor)
    float rms_eps;
    float attn_scale;         // multiplies q·k
    float embd_scale;         // multiplies the token embeddings (gemma: sqrt(n_embd))
    int act;                  // enum kn_act of the gated FFN
    int qk_norm, post_norms;  // gemma3 extras
    int sliding_window;       // 0 = none
    uint8_t layer_swa[MODEL_MAX_LAYERS]; // 1 = sliding-window layer
    int weight_type;          // the most common matrix type (for display)
    char chat_template[64];   // recognised template name from metadata ("" when none)
};

struct model;
struct gguf;

// Loads a GGUF (by magic) or a llama2.c checkpoint and uploads weights to `be`.
// NULL + one-line err (naming the file and what is wrong) on failure.
struct model *model_load(const char *path, struct kn_backend *be, char *err, size_t errlen);
void model_free(struct model *m);
const struct model_config *model_get_config(const struct model *m);
const struct gguf *model_get_gguf(const struct model *m); // NULL for llama2.c checkpoints
uint64_t model_weight_bytes(const struct model *m);
// The per-layer sliding windows, (n_layer) ints, for the KV cache params.
const int *model_layer_windows(const struct model *m);

struct model_batch {
    const int32_t *tokens; // (n)
    const int32_t *pos;    // (n) positions (consecutive)
    const uint8_t *flags;  // (n) enum kv_tok_flag bits, NULL = none
    int n;
    int phase;             // enum kv_phase of the batch's last micro-batch
    int logits_all;        // 1: logits for every token, 0: only the last
};

// Runs the batch through the model (in micro-batches), updating the cache. logits: host memory,
// (n, n_vocab) when logits_all else (n_vocab). 0 ok, -1 with err (context full, backend failure).
int model_forward(struct model *m, struct kv_cache *kv, const struct model_batch *b, float *logits, char *err,
                  size_t errlen);
// Largest micro-batch the forward uses.
int model_ubatch(const struct model *m);
