// app/engine.h — a conversation engine: model + tokenizer + KV cache + sampler + chat template.
// Used by the line chat, the TUI chat and the one-shot mode. One thread drives it; any thread may take a
// snapshot (engine_snapshot) while it generates.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "app/params.h"
#include "kernels/kn.h"
#include "kvcache/kv_stats.h"

struct engine;

struct engine_stats {
    char model_name[128];
    char arch[32];
    char device[96];
    int n_ctx, n_past;            // context capacity and tokens used
    int n_prompt, n_gen;          // last turn
    double prefill_tok_s, decode_tok_s; // last turn (0 when unknown)
    uint64_t weights_bytes;       // model weights held by the backend
    struct kn_mem mem;            // backend memory (GPU used/total on CUDA)
    struct kv_stats kv;           // KV cache snapshot (arrays owned by the snapshot)
    uint64_t seq;                 // increases whenever the snapshot changes
};

enum engine_stop { ENGINE_STOP_EOS, ENGINE_STOP_LIMIT, ENGINE_STOP_USER, ENGINE_STOP_CTX, ENGINE_STOP_ERROR };

// Called with each piece of generated text (complete UTF-8) as it is produced; return nonzero to stop.
typedef int (*engine_piece_cb)(void *ud, const char *utf8, size_t len);

// Loads model, tokenizer, backend and cache as the params say. NULL + one-line err on failure.
struct engine *engine_init(const struct app_params *p, char *err, size_t errlen);
void engine_free(struct engine *e);

// One chat turn: appends the user message (templated), generates the reply (streamed through cb),
// keeps both in the context. *stop (if not NULL) is polled between tokens. Returns enum engine_stop.
int engine_chat_turn(struct engine *e, const char *user_text, engine_piece_cb cb, void *ud,
                     const volatile int *stop);
// Drops the last reply and generates it again (same user message). Returns enum engine_stop, or -1
// when there is no turn to regenerate.
int engine_regen(struct engine *e, engine_piece_cb cb, void *ud, const volatile int *stop);
// Raw completion of `text` (BOS + text, no template), streamed. Returns enum engine_stop.
int engine_complete(struct engine *e, const char *text, engine_piece_cb cb, void *ud, const volatile int *stop);
// Forgets the conversation and empties the cache.
void engine_reset(struct engine *e);
// Sets the system prompt (NULL/"" = none); takes effect after engine_reset.
int engine_set_system(struct engine *e, const char *text);
// Changes an option by name ("temp", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "n_predict",
// "kv_policy", "recovery", "kv_bits", ...). Cache options rebuild the cache and reset the conversation:
// *reset_done is set to 1 then. 0 ok, -1 unknown name or bad value (err says which).
int engine_set_option(struct engine *e, const char *name, const char *value, int *reset_done, char *err,
                      size_t errlen);
// Writes "name = value" lines of the current options into buf.
void engine_describe_options(struct engine *e, char *buf, size_t cap);

// Copies the latest statistics into *out (whose kv arrays are (re)allocated as needed).
void engine_snapshot(struct engine *e, struct engine_stats *out);
void engine_stats_release(struct engine_stats *s);

const struct app_params *engine_params(const struct engine *e);
