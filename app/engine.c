// app/engine.c — the conversation engine: owns backend, model, tokenizer, KV cache and sampler, renders
// turns with the chat template, streams replies, and publishes statistics snapshots.
#include "app/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/log.h"
#include "app/setup.h"
#include "kvcache/kv_cache.h"
#include "model/chat_template.h"
#include "model/model.h"
#include "model/sampler.h"
#include "tokenizer/tok.h"

struct engine {
    struct app_params p;
    struct kn_backend *be;
    struct model *m;
    struct tok *tok;
    struct kv_cache *kv;
    struct sampler *smp;
    int tpl;
    int n_ctx;
    int stop_ids[8];
    int n_stop;
    uint8_t *tok_flags;      // (n_vocab) enum kv_tok_flag per id
    float *logits;           // (n_vocab) host
    int32_t *hist;           // (n_ctx) tokens in the context, in order
    int n_hist;
    // for /regen: the context length before the last reply and the last user text
    int last_reply_start;
    char *last_user;
    int replied;             // a reply closes the context (the template's reply-end goes first)
    char *system;
    // statistics
    pthread_mutex_t mu;
    struct engine_stats snap;
    int n_prompt, n_gen;
    double prefill_tok_s, decode_tok_s;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sampler_params_from(const struct app_params *p, struct sampler_params *sp) {
    sp->temp = p->temp;
    sp->top_k = p->top_k;
    sp->top_p = p->top_p;
    sp->min_p = p->min_p;
    sp->repeat_penalty = p->repeat_penalty;
    sp->repeat_last_n = p->repeat_last_n;
    sp->seed = p->seed ? p->seed : (uint64_t)time(NULL);
}

static struct kv_cache *make_cache(struct engine *e, const struct app_params *p, char *err, size_t errlen) {
    struct kv_cache_params kp;
    app_kv_params(p, e->m, e->n_ctx, &kp);
    return kv_cache_init(e->be, &kp, err, errlen);
}

static void publish(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    struct engine_stats *s = &e->snap;
    const struct model_config *c = model_get_config(e->m);
    snprintf(s->model_name, sizeof s->model_name, "%s", c->name);
    snprintf(s->arch, sizeof s->arch, "%s", c->arch_name);
    snprintf(s->device, sizeof s->device, "%s", e->be->ops->name);
    s->n_ctx = e->n_ctx;
    s->n_past = kv_cache_n_past(e->kv);
    s->n_prompt = e->n_prompt;
    s->n_gen = e->n_gen;
    s->prefill_tok_s = e->prefill_tok_s;
    s->decode_tok_s = e->decode_tok_s;
    s->weights_bytes = model_weight_bytes(e->m);
    e->be->ops->mem_info(e->be, &s->mem);
    kv_cache_stats(e->kv, &s->kv);
    s->seq++;
    pthread_mutex_unlock(&e->mu);
}

struct engine *engine_init(const struct app_params *p, char *err, size_t errlen) {
    struct engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    e->p = *p;
    e->be = app_backend_create(p, err, errlen);
    if (!e->be) goto fail;
    e->m = model_load(p->model_path, e->be, err, errlen);
    if (!e->m) goto fail;
    const struct model_config *c = model_get_config(e->m);
    if (p->tokenizer_path)
        e->tok = tok_load_model(p->tokenizer_path, err, errlen);
    else if (model_get_gguf(e->m))
        e->tok = tok_load_gguf(model_get_gguf(e->m), err, errlen);
    else
        snprintf(err, errlen, "%s is a llama2.c checkpoint: give its tokenizer with --tokenizer FILE.model", p->model_path);
    if (!e->tok) goto fail;
    if (tok_n_vocab(e->tok) > c->n_vocab) {
        snprintf(err, errlen, "tokenizer has %d pieces but the model only %d: they do not belong together",
                 tok_n_vocab(e->tok), c->n_vocab);
        goto fail;
    }
    e->n_ctx = p->n_ctx > 0 ? p->n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    if (e->n_ctx > c->n_ctx_train)
        app_log(APP_LOG_WARN, "context %d exceeds the model's training context %d", e->n_ctx, c->n_ctx_train);
    e->kv = make_cache(e, p, err, errlen);
    if (!e->kv) goto fail;
    struct sampler_params sp;
    sampler_params_from(p, &sp);
    e->smp = sampler_init(&sp, c->n_vocab);
    e->logits = malloc((size_t)c->n_vocab * sizeof *e->logits);
    e->hist = malloc((size_t)e->n_ctx * sizeof *e->hist);
    e->tok_flags = calloc((size_t)c->n_vocab, 1);
    if (!e->smp || !e->logits || !e->hist || !e->tok_flags) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int nv = tok_n_vocab(e->tok);
    for (int id = 0; id < nv; id++) {
        int ty = tok_type(e->tok, id);
        uint8_t f = 0;
        if (ty == TOK_CONTROL || ty == TOK_UNKNOWN || id == tok_bos(e->tok) || id == tok_eos(e->tok)) f |= KV_TOK_SPECIAL;
        if (ty == TOK_NORMAL && tok_is_punct(e->tok, id)) f |= KV_TOK_PUNCT;
        e->tok_flags[id] = f;
    }
    // chat template: flag, then metadata, then raw
    if (p->chat_template) {
        e->tpl = chat_tpl_from_name(p->chat_template);
        if (e->tpl < 0) {
            snprintf(err, errlen, "unknown --chat-template '%s' (raw, dialogue, llama2, zephyr, gemma, chatml)",
                     p->chat_template);
            goto fail;
        }
    } else {
        // llama2.c checkpoints (story models) continue raw text; GGUFs name theirs or get "dialogue"
        e->tpl = model_get_gguf(e->m) && c->chat_template[0] ? chat_tpl_from_name(c->chat_template) : CHAT_TPL_RAW;
        if (e->tpl < 0) e->tpl = CHAT_TPL_RAW;
    }
    if (tok_eos(e->tok) >= 0) e->stop_ids[e->n_stop++] = tok_eos(e->tok);
    for (const char *const *st = chat_tpl_stops(e->tpl); *st && e->n_stop < 8; st++) {
        int id = tok_piece_to_id(e->tok, *st);
        if (id >= 0) e->stop_ids[e->n_stop++] = id;
    }
    if (p->system_prompt) e->system = strdup(p->system_prompt);
    publish(e);
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(struct engine *e) {
    if (!e) return;
    kv_cache_free(e->kv);
    model_free(e->m);
    tok_free(e->tok);
    sampler_free(e->smp);
    kn_free(e->be);
    free(e->logits);
    free(e->hist);
    free(e->tok_flags);
    free(e->last_user);
    free(e->system);
    engine_stats_release(&e->snap);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const struct app_params *engine_params(const struct engine *e) { return &e->p; }

void engine_reset(struct engine *e) {
    kv_cache_clear(e->kv);
    e->n_hist = 0;
    e->replied = 0;
    e->last_reply_start = -1;
    free(e->last_user);
    e->last_user = NULL;
    publish(e);
}

int engine_set_system(struct engine *e, const char *text) {
    free(e->system);
    e->system = text && text[0] ? strdup(text) : NULL;
    return 0;
}

static int is_stop(const struct engine *e, int id) {
    for (int i = 0; i < e->n_stop; i++)
        if (e->stop_ids[i] == id) return 1;
    return 0;
}

// Runs tokens through the model as one prompt; logits of the last into e->logits.
static int prefill(struct engine *e, const int32_t *toks, int n, char *err, size_t errlen) {
    int n_past = kv_cache_n_past(e->kv);
    if (n_past + n + 1 > e->n_ctx) {
        snprintf(err, errlen, "the prompt needs %d tokens but only %d of the %d-token context are free", n,
                 e->n_ctx - n_past - 1, e->n_ctx);
        return -1;
    }
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    uint8_t *fl = malloc((size_t)n);
    if (!pos || !fl) {
        free(pos);
        free(fl);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        pos[i] = n_past + i;
        fl[i] = e->tok_flags[toks[i]];
    }
    struct model_batch b = {.tokens = toks, .pos = pos, .flags = fl, .n = n, .phase = KV_PHASE_PROMPT_END};
    double t0 = now_s();
    int rc = model_forward(e->m, e->kv, &b, e->logits, err, errlen);
    double dt = now_s() - t0;
    free(pos);
    free(fl);
    if (rc) return -1;
    memcpy(e->hist + e->n_hist, toks, (size_t)n * sizeof *toks);
    e->n_hist += n;
    e->n_prompt = n;
    e->prefill_tok_s = dt > 0 ? n / dt : 0;
    return 0;
}

static int decode_one(struct engine *e, int32_t tok, char *err, size_t errlen) {
    int32_t pos = kv_cache_n_past(e->kv);
    uint8_t fl = e->tok_flags[tok];
    struct model_batch b = {.tokens = &tok, .pos = &pos, .flags = &fl, .n = 1, .phase = KV_PHASE_DECODE};
    if (model_forward(e->m, e->kv, &b, e->logits, err, errlen)) return -1;
    e->hist[e->n_hist++] = tok;
    return 0;
}

// Samples and streams until a stop, the limit, the context end or *stop. `stop_text` (may be NULL) ends the
// reply where it first appears in a token's text; that token is not run through the model.
static int generate(struct engine *e, engine_piece_cb cb, void *ud, const volatile int *stop, const char *stop_text) {
    char err[256], piece[512], out[1100];
    struct tok_utf8 u = {{0}, 0};
    int prev = e->n_hist ? e->hist[e->n_hist - 1] : -1;
    int limit = e->p.n_predict;
    double t0 = now_s();
    e->n_gen = 0;
    e->decode_tok_s = 0;
    int why = ENGINE_STOP_LIMIT;
    for (;;) {
        if (stop && *stop) {
            why = ENGINE_STOP_USER;
            break;
        }
        if (limit >= 0 && e->n_gen >= limit) {
            why = ENGINE_STOP_LIMIT;
            break;
        }
        int hist_from = e->n_hist > e->p.repeat_last_n ? e->n_hist - e->p.repeat_last_n : 0;
        int id = sampler_sample(e->smp, e->logits, e->hist + hist_from, e->n_hist - hist_from);
        if (is_stop(e, id)) {
            why = ENGINE_STOP_EOS;
            break;
        }
        int n = tok_decode_piece(e->tok, prev, id, piece, sizeof piece);
        const char *cut = stop_text && e->n_gen > 0 ? strstr(piece, stop_text) : NULL;
        if (cut) { // emit what precedes the stop text, leave the token out of the context
            int m = tok_utf8_push(&u, piece, (size_t)(cut - piece), out, sizeof out);
            if (m > 0 && cb) cb(ud, out, (size_t)m);
            why = ENGINE_STOP_EOS;
            break;
        }
        int m = tok_utf8_push(&u, piece, (size_t)n, out, sizeof out);
        e->n_gen++;
        int quit = m > 0 && cb ? cb(ud, out, (size_t)m) : 0;
        if (kv_cache_n_past(e->kv) + 1 >= e->n_ctx) {
            e->hist[e->n_hist++] = id; // the sampled token ends the reply; no room to run it
            why = ENGINE_STOP_CTX;
            break;
        }
        if (decode_one(e, id, err, sizeof err)) {
            app_log(APP_LOG_ERROR, "%s", err);
            why = ENGINE_STOP_ERROR;
            break;
        }
        prev = id;
        double dt = now_s() - t0;
        e->decode_tok_s = dt > 0 ? e->n_gen / dt : 0;
        publish(e);
        if (quit) {
            why = ENGINE_STOP_USER;
            break;
        }
    }
    int m = tok_utf8_flush(&u, out, sizeof out);
    if (m > 0 && cb) cb(ud, out, (size_t)m);
    double dt = now_s() - t0;
    if (e->n_gen > 0 && dt > 0) e->decode_tok_s = e->n_gen / dt;
    publish(e);
    return why;
}

// Tokenizes text (control pieces recognised when `special`), prefixed by BOS when the context is empty.
static int32_t *encode(struct engine *e, const char *text, int special, int *n_out) {
    int bos = kv_cache_n_past(e->kv) == 0 && tok_bos(e->tok) >= 0;
    int cap = (int)strlen(text) + 16;
    int32_t *ids = malloc((size_t)(cap + 1) * sizeof *ids);
    if (!ids) return NULL;
    int n = special ? tok_encode_special(e->tok, text, ids + bos, cap) : tok_encode(e->tok, text, ids + bos, cap);
    if (n > cap) {
        int32_t *more = realloc(ids, (size_t)(n + 1) * sizeof *ids);
        if (!more) {
            free(ids);
            return NULL;
        }
        ids = more;
        n = special ? tok_encode_special(e->tok, text, ids + bos, n) : tok_encode(e->tok, text, ids + bos, n);
    }
    if (n < 0) {
        free(ids);
        return NULL;
    }
    if (bos) ids[0] = tok_bos(e->tok);
    *n_out = n + bos;
    return ids;
}

static int run_prompt(struct engine *e, const char *text, int special) {
    char err[512];
    int n = 0;
    int32_t *ids = encode(e, text, special, &n);
    if (!ids) {
        app_log(APP_LOG_ERROR, "cannot tokenize the prompt");
        return ENGINE_STOP_ERROR;
    }
    if (n == 0) {
        free(ids);
        app_log(APP_LOG_ERROR, "the prompt is empty");
        return ENGINE_STOP_ERROR;
    }
    int rc = prefill(e, ids, n, err, sizeof err);
    free(ids);
    if (rc) {
        app_log(APP_LOG_ERROR, "%s", err);
        return ENGINE_STOP_ERROR; // a prompt that does not fit is an error, not a full context
    }
    publish(e);
    return -1;
}

int engine_chat_turn(struct engine *e, const char *user_text, engine_piece_cb cb, void *ud, const volatile int *stop) {
    int first = kv_cache_n_past(e->kv) == 0;
    size_t need = chat_tpl_user(e->tpl, e->system, user_text, first, NULL, 0) + 64;
    char *text = malloc(need);
    if (!text) return ENGINE_STOP_ERROR;
    size_t off = 0;
    if (e->replied) off = (size_t)snprintf(text, need, "%s", chat_tpl_reply_end(e->tpl));
    chat_tpl_user(e->tpl, e->system, user_text, first, text + off, need - off);
    int saved_hist = e->n_hist;
    int rc = run_prompt(e, text, 1);
    free(text);
    if (rc >= 0) return rc;
    free(e->last_user);
    e->last_user = strdup(user_text);
    e->last_reply_start = saved_hist;
    rc = generate(e, cb, ud, stop, chat_tpl_stop_text(e->tpl));
    e->replied = 1;
    return rc;
}

int engine_complete(struct engine *e, const char *text, engine_piece_cb cb, void *ud, const volatile int *stop) {
    int rc = run_prompt(e, text, 0);
    if (rc >= 0) return rc;
    return generate(e, cb, ud, stop, NULL);
}

int engine_regen(struct engine *e, engine_piece_cb cb, void *ud, const volatile int *stop) {
    if (!e->last_user || e->last_reply_start < 0) return -1;
    // A compressed cache cannot be rolled back, so the conversation before the last user turn is read
    // again as one prompt (re-profiled), then the last turn is sent again.
    int n_keep = e->last_reply_start;
    int32_t *keep = malloc((size_t)(n_keep + 1) * sizeof *keep);
    char *user = strdup(e->last_user);
    if (!keep || !user) {
        free(keep);
        free(user);
        return ENGINE_STOP_ERROR;
    }
    memcpy(keep, e->hist, (size_t)n_keep * sizeof *keep);
    int replied = n_keep > 0;
    kv_cache_clear(e->kv);
    e->n_hist = 0;
    e->replied = 0;
    int rc = -1;
    if (n_keep > 0) {
        char err[512];
        if (prefill(e, keep, n_keep, err, sizeof err)) {
            app_log(APP_LOG_ERROR, "%s", err);
            rc = ENGINE_STOP_ERROR;
        }
    }
    free(keep);
    if (rc < 0) {
        e->replied = replied;
        rc = engine_chat_turn(e, user, cb, ud, stop);
    }
    free(user);
    return rc;
}

static int parse_f(const char *v, float lo, float hi, float *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) return -1;
    *out = (float)x;
    return 0;
}
static int parse_i(const char *v, long lo, long hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

int engine_set_option(struct engine *e, const char *name, const char *value, int *reset_done, char *err, size_t errlen) {
    struct app_params np = e->p;
    int cache = 0, bad = 0;
    if (reset_done) *reset_done = 0;
    if (strcmp(name, "temp") == 0) bad = parse_f(value, 0, 100, &np.temp);
    else if (strcmp(name, "top_k") == 0) bad = parse_i(value, 0, 1 << 24, &np.top_k);
    else if (strcmp(name, "top_p") == 0) bad = parse_f(value, 0, 1, &np.top_p);
    else if (strcmp(name, "min_p") == 0) bad = parse_f(value, 0, 1, &np.min_p);
    else if (strcmp(name, "repeat_penalty") == 0) bad = parse_f(value, 0.01f, 100, &np.repeat_penalty);
    else if (strcmp(name, "n_predict") == 0) bad = parse_i(value, -1, 1 << 20, &np.n_predict);
    else if (strcmp(name, "seed") == 0) {
        char *end;
        unsigned long long s = strtoull(value, &end, 10);
        bad = end == value || *end;
        np.seed = s;
    } else if (strcmp(name, "kv_policy") == 0) {
        int k = kv_policy_from_name(value);
        bad = k < 0;
        np.kv_policy = k;
        cache = 1;
    } else if (strcmp(name, "recovery") == 0) {
        bad = parse_f(value, 0, 1, &np.recovery);
        cache = 1;
    } else if (strcmp(name, "local_ratio") == 0) {
        bad = parse_f(value, 0, 1, &np.local_ratio);
        cache = 1;
    } else if (strcmp(name, "heavy_ratio") == 0) {
        bad = parse_f(value, 0, 1, &np.heavy_ratio);
        cache = 1;
    } else if (strcmp(name, "kv_bits") == 0) {
        bad = parse_i(value, 2, 16, &np.kv_bits) || (np.kv_bits != 2 && np.kv_bits != 4 && np.kv_bits != 16);
        cache = 1;
    } else if (strcmp(name, "kv_group") == 0) {
        bad = parse_i(value, 1, 32, &np.kv_group);
        cache = 1;
    } else if (strcmp(name, "kv_residual") == 0) {
        bad = parse_i(value, 1, 1 << 20, &np.kv_residual);
        cache = 1;
    } else if (strcmp(name, "kv_budget") == 0) {
        bad = parse_i(value, 0, 1 << 24, &np.kv_budget);
        cache = 1;
    } else if (strcmp(name, "kv_flush") == 0) {
        bad = strcmp(value, "token") != 0 && strcmp(value, "block") != 0;
        np.kv_flush = strcmp(value, "block") == 0 ? KV_FLUSH_BLOCK : KV_FLUSH_TOKEN;
        cache = 1;
    } else {
        snprintf(err, errlen, "unknown option '%s' (temp, top_k, top_p, min_p, repeat_penalty, n_predict, seed, "
                              "kv_policy, recovery, local_ratio, heavy_ratio, kv_bits, kv_group, kv_residual, "
                              "kv_budget, kv_flush)", name);
        return -1;
    }
    if (bad) {
        snprintf(err, errlen, "bad value '%s' for %s", value, name);
        return -1;
    }
    if (cache) {
        struct kv_cache *kv = make_cache(e, &np, err, errlen);
        if (!kv) return -1;
        kv_cache_free(e->kv);
        e->kv = kv;
        e->p = np;
        engine_reset(e);
        if (reset_done) *reset_done = 1;
        return 0;
    }
    e->p = np;
    struct sampler_params sp;
    sampler_params_from(&np, &sp);
    sampler_set_params(e->smp, &sp);
    return 0;
}

void engine_describe_options(struct engine *e, char *buf, size_t cap) {
    const struct app_params *p = &e->p;
    snprintf(buf, cap,
             "temp = %g\ntop_k = %d\ntop_p = %g\nmin_p = %g\nrepeat_penalty = %g\nn_predict = %d\nseed = %llu\n"
             "kv_policy = %s\nrecovery = %g\nlocal_ratio = %g\nheavy_ratio = %g\nkv_bits = %d\nkv_group = %d\n"
             "kv_residual = %d\nkv_budget = %d\nkv_flush = %s\nchat_template = %s\nctx = %d\n",
             (double)p->temp, p->top_k, (double)p->top_p, (double)p->min_p, (double)p->repeat_penalty, p->n_predict,
             (unsigned long long)p->seed, kv_policy_name(p->kv_policy), (double)p->recovery, (double)p->local_ratio,
             (double)p->heavy_ratio, p->kv_bits, p->kv_group, p->kv_residual, p->kv_budget,
             p->kv_flush == KV_FLUSH_BLOCK ? "block" : "token", chat_tpl_name(e->tpl), e->n_ctx);
}

void engine_snapshot(struct engine *e, struct engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    struct kv_stats kv = out->kv;
    *out = e->snap;
    out->kv = kv;
    kv_stats_copy(&out->kv, &e->snap.kv);
    pthread_mutex_unlock(&e->mu);
}

void engine_stats_release(struct engine_stats *s) { kv_stats_release(&s->kv); }
