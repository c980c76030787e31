// app/eval.h — what `kvchat eval --sweep` (app/eval_sweep.c) uses of app/eval.c: a session holding the model,
// the text (or passkey trials) and the full cache's reference pass, and one KV configuration run against it.
#pragma once
#include <stddef.h>

#include "app/params.h"
#include "kvcache/kv_stats.h"

struct eval_session;

// One configuration's numbers against the session's full-cache reference.
struct eval_row {
    double ppl, ppl_full;  // text: perplexity of the scored tokens, and the full cache's (0 for passkey)
    double top1_agree;     // text: share of greedy picks equal to the full cache's
    int pk_ok, pk_n;       // passkey: right answers of pk_n trials (pk_n = 0 for a text)
    double kv_saving;      // 1 - kv_bytes / kv_bytes_full at the end of the run
    double kv_saving_mean; // the same averaged over the decode steps (text) or the trials (passkey)
    double kept_mean;      // tokens a layer's KV head holds (retained / (n_layer * n_head_kv)), averaged alike
    struct kv_stats kv;    // final snapshot (arrays owned by the row: kv_stats_release)
};

// What the session runs on (for headers and JSON).
struct eval_info {
    char model[128], arch[32], device[96];
    char text[256];        // the text's name, or "passkey"
    int passkey;           // 1 for --task passkey
    int n_tok, n_prompt;   // text: tokens, of which the prompt; passkey: tokens of the last prompt, trials
};

// Loads model, tokenizer and text (or the passkey trials) as p says and runs the full cache once.
// NULL + one-line err on failure.
struct eval_session *eval_session_open(const struct app_params *p, char *err, size_t errlen);
// Runs cfg's KV options (the model and text are the session's) and fills out. 0 ok, -1 + err.
int eval_session_run(struct eval_session *s, const struct app_params *cfg, struct eval_row *out, char *err,
                     size_t errlen);
// The full cache's row (top-1 agreement 1 by definition).
const struct eval_row *eval_session_full(const struct eval_session *s);
void eval_session_info(const struct eval_session *s, struct eval_info *out);
void eval_session_close(struct eval_session *s);

// `kvchat eval --sweep` (app/eval_sweep.c): FastGen at --recovery (or 0.95 and 0.98), then the comparison
// policies at FastGen's retained tokens per layer and KV head; one table (text, or JSON with --json).
int app_eval_sweep(const struct app_params *p);
