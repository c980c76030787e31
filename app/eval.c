// app/eval.c — `kvchat eval` (SPEC §8): one text through the full cache and through the chosen cache —
// perplexity, teacher-forced top-1 agreement, KV bytes, heads per policy — or the passkey task.
//
// How a text is scored. Compression acts only once a prompt has been profiled, so scoring the whole text as
// one prefill would measure nothing. The first quarter of the text (at least 16 tokens) is the prompt:
// prefilled at once, profiled, then compressed as after any user turn. Every later token is fed alone, as a
// decode step, exactly as a generated token would be (the policy evicts after each one), and the logits
// before it score it. Both caches see the same tokens, so the full cache's greedy pick at each step is the
// reference for top-1 agreement ("teacher forcing"). The full-cache pass is kept (its log-likelihood and
// picks) so that several configurations can be compared with one reference (eval_run_config).
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/eval.h"
#include "app/eval_text.h"
#include "app/json.h"
#include "app/modes.h"
#include "app/setup.h"
#include "kvcache/kv_cache.h"
#include "model/model.h"
#include "tokenizer/tok.h"

#define EVAL_PROMPT_MIN 16 // the prompt is max(n/4, 16) tokens
#define PK_ANSWER_TOKENS 8 // greedy tokens generated for a passkey answer
#define PK_N_DEPTHS 5
#define PK_N_SEEDS 3
static const double pk_depths[PK_N_DEPTHS] = {0.1, 0.3, 0.5, 0.7, 0.9};

// What every configuration shares: loaded once.
struct eval_ctx {
    const struct app_params *p;
    struct kn_backend *be;
    struct model *m;
    struct tok *tok;
    uint8_t *flags; // (n_vocab) enum kv_tok_flag per token id
    float *logits;  // (n_vocab) host
    int n_vocab;
    int n_ctx; // positions the model may use
    // the text (text mode) or the passkey prompts (passkey mode)
    int32_t *toks;
    int n_tok, n_prompt;
    char text_name[256];
    struct pk_trial *pk;
    int n_pk;
};

struct pk_trial {
    int32_t *toks;
    int n;
    char key[8];
    double depth;
};

// The full cache's pass over the text (or passkey prompts): the reference every configuration is held to.
struct eval_ref {
    double nll;         // summed over the scored tokens
    int32_t *top1;      // (n_tok - n_prompt) greedy pick before each scored token
    int pk_ok;          // passkey answers right
    struct kv_stats kv; // final snapshot
};

// One configuration's numbers.
struct eval_result {
    double nll;          // text: summed over the scored tokens
    int n_scored, agree; // text: tokens scored, greedy picks equal to the reference's
    double saving_mean;  // 1 - kv_bytes/kv_bytes_full, mean over the decode steps (text) or trials (passkey)
    int pk_ok, pk_n;     // passkey: right answers of pk_n
    double kept_mean; // tokens a layer's KV head holds, averaged like saving_mean (eval --sweep matches it)
    double prefill_tok_s, decode_tok_s;
    int n_prompt, n_gen; // of the last run (for the JSON stats fields)
    struct kv_stats kv;  // final snapshot
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double saving_of(const struct kv_stats *s) {
    return s->kv_bytes_full ? 1.0 - (double)s->kv_bytes / (double)s->kv_bytes_full : 0.0;
}

static double kept_of(const struct kv_stats *s) {
    return s->n_layer * s->n_head_kv > 0 ? (double)s->retained_tokens / (s->n_layer * s->n_head_kv) : 0.0;
}

// -log softmax(x)[target] over n logits; *best = argmax (first of equal maxima).
static double nll_of(const float *x, int n, int target, int32_t *best) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    double mx = x[b], sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    *best = b;
    return log(sum) + mx - (double)x[target];
}

// ---- loading -----------------------------------------------------------------------------------------

static void ctx_free(struct eval_ctx *c) {
    for (int i = 0; i < c->n_pk; i++)
        free(c->pk[i].toks);
    free(c->pk);
    free(c->toks);
    free(c->flags);
    free(c->logits);
    tok_free(c->tok);
    model_free(c->m);
    kn_free(c->be);
}

static int ctx_init(struct eval_ctx *c, const struct app_params *p, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->p = p;
    c->be = app_backend_create(p, err, errlen);
    if (!c->be) return -1;
    c->m = model_load(p->model_path, c->be, err, errlen);
    if (!c->m) return -1;
    const struct model_config *mc = model_get_config(c->m);
    if (p->tokenizer_path)
        c->tok = tok_load_model(p->tokenizer_path, err, errlen);
    else if (model_get_gguf(c->m))
        c->tok = tok_load_gguf(model_get_gguf(c->m), err, errlen);
    else
        snprintf(err, errlen, "%s is a llama2.c checkpoint: give its tokenizer with --tokenizer FILE.model",
                 p->model_path);
    if (!c->tok) return -1;
    if (tok_n_vocab(c->tok) > mc->n_vocab) {
        snprintf(err, errlen, "tokenizer has %d pieces but the model only %d: they do not belong together",
                 tok_n_vocab(c->tok), mc->n_vocab);
        return -1;
    }
    c->n_vocab = mc->n_vocab;
    c->n_ctx = p->n_ctx > 0 ? p->n_ctx : (mc->n_ctx_train < 4096 ? mc->n_ctx_train : 4096);
    c->flags = calloc((size_t)c->n_vocab, 1);
    c->logits = malloc((size_t)c->n_vocab * sizeof *c->logits);
    if (!c->flags || !c->logits) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    // the same token classes the chat engine gives the cache
    for (int id = 0; id < tok_n_vocab(c->tok); id++) {
        int ty = tok_type(c->tok, id);
        uint8_t f = 0;
        if (ty == TOK_CONTROL || ty == TOK_UNKNOWN || id == tok_bos(c->tok) || id == tok_eos(c->tok))
            f |= KV_TOK_SPECIAL;
        if (ty == TOK_NORMAL && tok_is_punct(c->tok, id)) f |= KV_TOK_PUNCT;
        c->flags[id] = f;
    }
    return 0;
}

// BOS (when the tokenizer has one) + the text's tokens, at most cap of them. NULL on failure.
static int32_t *encode(struct eval_ctx *c, const char *text, int cap, int *n_out) {
    int bos = tok_bos(c->tok) >= 0;
    int n = tok_encode(c->tok, text, NULL, 0);
    if (n < 0) return NULL;
    int32_t *ids = malloc((size_t)(n + 1) * sizeof *ids);
    if (!ids) return NULL;
    if (tok_encode(c->tok, text, ids + bos, n) != n) {
        free(ids);
        return NULL;
    }
    if (bos) ids[0] = tok_bos(c->tok);
    n += bos;
    *n_out = n < cap ? n : cap;
    return ids;
}

static char *read_file(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--text: cannot open %s", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *more = realloc(buf, 2 * cap + 1);
        if (!more) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = more;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        snprintf(err, errlen, "--text: cannot read %s", path);
        return NULL;
    }
    buf[n] = 0;
    if (strlen(buf) != n) {
        free(buf);
        snprintf(err, errlen, "--text: %s is not a text file (it contains NUL bytes)", path);
        return NULL;
    }
    return buf;
}

// The text to score: --text FILE or the built-in story, first --eval-tokens tokens (at most the context).
static int load_text(struct eval_ctx *c, char *err, size_t errlen) {
    const struct app_params *p = c->p;
    char *text = p->text_file ? read_file(p->text_file, err, errlen) : eval_builtin_text();
    if (!text) {
        if (!p->text_file) snprintf(err, errlen, "out of memory");
        return -1;
    }
    int cap = p->eval_tokens < c->n_ctx ? p->eval_tokens : c->n_ctx;
    // a long file: tokenize only a head of it that surely holds cap tokens (at a UTF-8 character start)
    size_t len = strlen(text), keep = (size_t)cap * 64 + 1024;
    if (len > keep) {
        while (keep > 0 && ((unsigned char)text[keep] & 0xc0) == 0x80)
            keep--;
        text[keep] = 0;
    }
    int n_all = 0;
    c->toks = encode(c, text, cap, &n_all);
    free(text);
    if (!c->toks) {
        snprintf(err, errlen, "cannot tokenize the text");
        return -1;
    }
    c->n_tok = n_all;
    if (c->n_tok < EVAL_PROMPT_MIN + 8) {
        snprintf(err, errlen, "the text has only %d tokens; eval needs at least %d", c->n_tok,
                 EVAL_PROMPT_MIN + 8);
        return -1;
    }
    c->n_prompt = c->n_tok / 4 > EVAL_PROMPT_MIN ? c->n_tok / 4 : EVAL_PROMPT_MIN;
    snprintf(c->text_name, sizeof c->text_name, "%s", p->text_file ? p->text_file : "built-in story");
    if (c->n_tok < p->eval_tokens)
        fprintf(stderr, "kvchat: eval: the text gives %d tokens (of --eval-tokens %d)%s\n", c->n_tok,
                p->eval_tokens, cap < p->eval_tokens ? ": the context is smaller" : "");
    return 0;
}

// ---- running tokens through a cache -------------------------------------------------------------------

static int run_batch(struct eval_ctx *c, struct kv_cache *kv, const int32_t *toks, int n, int pos0, int phase,
                     char *err, size_t errlen) {
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    uint8_t *fl = malloc((size_t)n);
    if (!pos || !fl) {
        free(pos);
        free(fl);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        pos[i] = pos0 + i;
        fl[i] = c->flags[toks[i]];
    }
    struct model_batch b = {.tokens = toks, .pos = pos, .flags = fl, .n = n, .phase = phase};
    int rc = model_forward(c->m, kv, &b, c->logits, err, errlen);
    free(pos);
    free(fl);
    return rc;
}

// The text through kv: prompt prefill, then one decode step per token. Sums the scored tokens' -log p,
// stores the greedy picks in top1 (when not NULL) and counts agreement with ref_top1 (when not NULL).
static int text_pass(struct eval_ctx *c, struct kv_cache *kv, int32_t *top1, const int32_t *ref_top1,
                     struct eval_result *r, char *err, size_t errlen) {
    int P = c->n_prompt, n = c->n_tok;
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    kv_cache_clear(kv);
    r->nll = 0.0;
    r->n_scored = r->agree = 0;
    double saving = 0.0, kept = 0.0, t0 = now_s(), t_dec = 0.0;
    if (run_batch(c, kv, c->toks, P, 0, KV_PHASE_PROMPT_END, err, errlen)) return -1;
    double t_pre = now_s() - t0;
    int rc = 0;
    for (int j = P; j < n && !rc; j++) {
        int32_t best;
        r->nll += nll_of(c->logits, c->n_vocab, c->toks[j], &best);
        if (top1) top1[j - P] = best;
        if (ref_top1) r->agree += best == ref_top1[j - P];
        r->n_scored++;
        if (j + 1 == n) break; // the last token is scored, never fed
        double t1 = now_s();
        rc = run_batch(c, kv, c->toks + j, 1, j, KV_PHASE_DECODE, err, errlen);
        t_dec += now_s() - t1;
        if (!rc && kv_cache_stats(kv, &s) == 0) {
            saving += saving_of(&s);
            kept += kept_of(&s);
        }
    }
    kv_stats_release(&s);
    if (rc) return -1;
    r->saving_mean = n - 1 > P ? saving / (n - 1 - P) : 0.0;
    r->kept_mean = n - 1 > P ? kept / (n - 1 - P) : 0.0;
    r->prefill_tok_s = t_pre > 0 ? P / t_pre : 0.0;
    r->decode_tok_s = t_dec > 0 ? (n - 1 - P) / t_dec : 0.0;
    r->n_prompt = P;
    r->n_gen = n - 1 - P;
    if (kv_cache_stats(kv, &r->kv)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

// ---- passkey ------------------------------------------------------------------------------------------

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

// The passkey prompt with n_fill filler sentences, the key hidden after sentence round(depth * n_fill).
static char *pk_text(const char *key, double depth, int seed, int n_fill) {
    static const char intro[] = "A pass key is hidden in the text below. Read it, remember it, and say it "
                                "when you are asked.\n\n";
    static const char question[] = "\n\nWhat is the pass key? The pass key is";
    char needle[96];
    snprintf(needle, sizeof needle, "The pass key is %s. Remember it: %s is the pass key. ", key, key);
    size_t cap = sizeof intro + sizeof question + sizeof needle + 1;
    for (int i = 0; i < n_fill; i++)
        cap += strlen(eval_filler(seed * 3 + i)) + 1;
    char *s = malloc(cap);
    if (!s) return NULL;
    int at_needle = (int)lround(depth * n_fill);
    size_t at = (size_t)snprintf(s, cap, "%s", intro);
    for (int i = 0; i <= n_fill; i++) {
        if (i == at_needle) at += (size_t)snprintf(s + at, cap - at, "%s", needle);
        if (i < n_fill) at += (size_t)snprintf(s + at, cap - at, "%s ", eval_filler(seed * 3 + i));
    }
    while (at > 0 && s[at - 1] == ' ')
        at--;
    snprintf(s + at, cap - at, "%s", question);
    return s;
}

// Tokens of the passkey prompt with n_fill sentences (NULL on failure).
static int32_t *pk_tokens(struct eval_ctx *c, const struct pk_trial *t, int seed, int n_fill, int *n) {
    char *txt = pk_text(t->key, t->depth, seed, n_fill);
    int32_t *ids = txt ? encode(c, txt, 1 << 30, n) : NULL;
    free(txt);
    return ids;
}

// Builds the trials: depths x seeds, each prompt as close to `target` tokens as whole sentences allow.
static int pk_build(struct eval_ctx *c, int target, char *err, size_t errlen) {
    c->pk = calloc(PK_N_DEPTHS * PK_N_SEEDS, sizeof *c->pk);
    if (!c->pk) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int d = 0; d < PK_N_DEPTHS; d++) {
        for (int sd = 0; sd < PK_N_SEEDS; sd++) {
            struct pk_trial *t = &c->pk[c->n_pk];
            uint64_t x = mix64(0x5eed0000ull + (uint64_t)(sd * PK_N_DEPTHS + d));
            snprintf(t->key, sizeof t->key, "%05d", 10000 + (int)(x % 90000));
            t->depth = pk_depths[d];
            // the token cost of a sentence from 0 and 40 of them, then fewer until the prompt fits
            int n0 = 0, n40 = 0;
            int32_t *a = pk_tokens(c, t, sd, 0, &n0), *b = pk_tokens(c, t, sd, 40, &n40);
            free(a);
            free(b);
            if (!a || !b) {
                snprintf(err, errlen, "cannot tokenize the passkey prompt");
                return -1;
            }
            double per = (n40 - n0) / 40.0;
            int n_fill = per > 0 && target > n0 ? (int)((target - n0) / per) + 1 : 0;
            for (;;) {
                t->toks = pk_tokens(c, t, sd, n_fill, &t->n);
                if (!t->toks) {
                    snprintf(err, errlen, "cannot tokenize the passkey prompt");
                    return -1;
                }
                if (t->n <= target || n_fill == 0) break;
                int drop = per > 0 ? (int)((t->n - target) / per) : 1;
                n_fill -= drop > 1 ? drop : 1;
                if (n_fill < 0) n_fill = 0;
                free(t->toks);
                t->toks = NULL;
            }
            if (t->n + PK_ANSWER_TOKENS > c->n_ctx) {
                snprintf(err, errlen, "the passkey prompt (%d tokens) does not fit the %d-token context",
                         t->n, c->n_ctx);
                return -1;
            }
            c->n_pk++;
        }
    }
    return 0;
}

// Greedy answer of one trial through kv; 1 when its first number is the key.
static int pk_run(struct eval_ctx *c, struct kv_cache *kv, const struct pk_trial *t, char *answer, size_t cap,
                  char *err, size_t errlen) {
    kv_cache_clear(kv);
    if (run_batch(c, kv, t->toks, t->n, 0, KV_PHASE_PROMPT_END, err, errlen)) return -1;
    size_t at = 0;
    answer[0] = 0;
    int prev = t->toks[t->n - 1];
    for (int i = 0; i < PK_ANSWER_TOKENS; i++) {
        int32_t id;
        nll_of(c->logits, c->n_vocab, 0, &id);
        if (id == tok_eos(c->tok)) break;
        char piece[256];
        int m = tok_decode_piece(c->tok, prev, id, piece, sizeof piece);
        if (m > 0 && at + (size_t)m < cap) {
            memcpy(answer + at, piece, (size_t)m);
            at += (size_t)m;
            answer[at] = 0;
        }
        prev = id;
        if (i + 1 < PK_ANSWER_TOKENS && run_batch(c, kv, &id, 1, t->n + i, KV_PHASE_DECODE, err, errlen))
            return -1;
    }
    const char *d = answer;
    while (*d && !isdigit((unsigned char)*d))
        d++;
    size_t nd = 0;
    while (isdigit((unsigned char)d[nd]))
        nd++;
    return nd == strlen(t->key) && strncmp(d, t->key, nd) == 0;
}

// ---- one configuration --------------------------------------------------------------------------------

// Runs the configuration `cfg` (its KV options; the model is c's) over c's text or passkey trials and fills
// r (whose kv snapshot the caller releases, also on failure); with ref (the full cache's pass) counts top-1
// agreement; with ref_out it is the reference pass and fills it.
static int eval_run_config(struct eval_ctx *c, const struct app_params *cfg, const struct eval_ref *ref,
                           struct eval_ref *ref_out, struct eval_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    int need = c->n_tok;
    for (int i = 0; i < c->n_pk; i++)
        if (c->pk[i].n + PK_ANSWER_TOKENS > need) need = c->pk[i].n + PK_ANSWER_TOKENS;
    struct kv_cache_params kp;
    app_kv_params(cfg, c->m, need, &kp);
    struct kv_cache *kv = kv_cache_init(c->be, &kp, err, errlen);
    if (!kv) return -1;
    int rc = 0;
    if (c->n_pk == 0) {
        rc = text_pass(c, kv, ref_out ? ref_out->top1 : NULL, ref ? ref->top1 : NULL, r, err, errlen);
        if (!rc && ref_out) ref_out->nll = r->nll;
    } else {
        struct kv_stats s;
        memset(&s, 0, sizeof s);
        double t_pre = 0;
        for (int i = 0; i < c->n_pk && !rc; i++) {
            char answer[256];
            double t0 = now_s();
            int ok = pk_run(c, kv, &c->pk[i], answer, sizeof answer, err, errlen);
            t_pre += now_s() - t0; // prompt + a few answer tokens: reported as prefill speed
            if (ok < 0) {
                rc = -1;
                break;
            }
            r->pk_ok += ok;
            r->pk_n++;
            if (kv_cache_stats(kv, &s) == 0) {
                r->saving_mean += saving_of(&s);
                r->kept_mean += kept_of(&s);
            }
            if (c->p->json == 0 && getenv("KVCHAT_EVAL_VERBOSE"))
                fprintf(stderr, "passkey %s depth %.1f (%d tokens): %s -> \"%s\"\n", c->pk[i].key,
                        c->pk[i].depth, c->pk[i].n, ok ? "ok" : "wrong", answer);
        }
        if (!rc) {
            r->saving_mean /= r->pk_n ? r->pk_n : 1;
            r->kept_mean /= r->pk_n ? r->pk_n : 1;
            r->n_prompt = c->pk[c->n_pk - 1].n;
            r->n_gen = PK_ANSWER_TOKENS;
            r->prefill_tok_s = t_pre > 0 ? (double)(r->n_prompt * r->pk_n) / t_pre : 0;
            r->decode_tok_s = 0;
            if (ref_out) ref_out->pk_ok = r->pk_ok;
            if (kv_cache_stats(kv, &r->kv)) rc = -1;
        }
        kv_stats_release(&s);
    }
    if (!rc && ref_out && kv_stats_copy(&ref_out->kv, &r->kv)) rc = -1;
    kv_cache_free(kv);
    return rc;
}

// ---- output -------------------------------------------------------------------------------------------

// "special 3, special+punct 5, full 10": heads per policy, merging sliding-window variants by name.
static void heads_line(const struct kv_stats *s, char *buf, size_t cap) {
    const char *names[128];
    int counts[128], n = 0;
    for (int k = 0; k < 128; k++) {
        if (!s->n_heads_by_comps[k]) continue;
        const char *nm = kv_comps_name((uint32_t)k);
        int j = 0;
        while (j < n && strcmp(names[j], nm))
            j++;
        if (j == n) {
            names[n] = nm;
            counts[n++] = 0;
        }
        counts[j] += s->n_heads_by_comps[k];
    }
    size_t at = 0;
    buf[0] = 0;
    for (int j = 0; j < n && at < cap; j++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s %d", j ? ", " : "", names[j], counts[j]);
}

static void config_label(const struct app_params *p, char *buf, size_t cap) {
    size_t at = (size_t)snprintf(buf, cap, "%s", kv_policy_name(p->kv_policy));
    if (p->kv_policy == KV_POLICY_FASTGEN) {
        at += (size_t)snprintf(buf + at, cap - at, " T=%.2f", (double)p->recovery);
        if (p->local_ratio != 0.3f || p->heavy_ratio != 0.3f)
            at += (size_t)snprintf(buf + at, cap - at, " rl=%.2f rf=%.2f", (double)p->local_ratio,
                                   (double)p->heavy_ratio);
    }
    if (p->kv_bits != 16 && at < cap) snprintf(buf + at, cap - at, " %d-bit", p->kv_bits);
}

static void fill_stats(struct eval_ctx *c, const struct eval_result *r, struct engine_stats *es) {
    memset(es, 0, sizeof *es);
    const struct model_config *mc = model_get_config(c->m);
    snprintf(es->model_name, sizeof es->model_name, "%s", mc->name);
    snprintf(es->arch, sizeof es->arch, "%s", mc->arch_name);
    snprintf(es->device, sizeof es->device, "%s", c->be->ops->name);
    es->n_ctx = r->kv.n_ctx;
    es->n_past = r->kv.n_past;
    es->n_prompt = r->n_prompt;
    es->n_gen = r->n_gen;
    es->prefill_tok_s = r->prefill_tok_s;
    es->decode_tok_s = r->decode_tok_s;
    es->weights_bytes = model_weight_bytes(c->m);
    c->be->ops->mem_info(c->be, &es->mem);
    es->kv = r->kv; // borrowed: not released through es
}

static void print_json(struct eval_ctx *c, const struct eval_ref *ref, const struct eval_result *full,
                       const struct eval_result *r) {
    const struct app_params *p = c->p;
    struct engine_stats es;
    fill_stats(c, r, &es);
    fputc('{', stdout);
    app_json_stats_fields(stdout, &es);
    printf(", \"recovery\": %.4f, \"local_ratio\": %.4f, \"heavy_ratio\": %.4f", (double)p->recovery,
           (double)p->local_ratio, (double)p->heavy_ratio);
    printf(", \"kv_bytes_full_cache\": %llu, \"kv_saving_mean\": %.6f", (unsigned long long)ref->kv.kv_bytes,
           r->saving_mean);
    if (c->n_pk == 0) {
        double ppl = exp(r->nll / r->n_scored), ppl_full = exp(ref->nll / r->n_scored);
        printf(", \"text\": ");
        app_json_str(stdout, c->text_name);
        printf(", \"eval_tokens\": %d, \"eval_prompt\": %d, \"n_scored\": %d", c->n_tok, c->n_prompt,
               r->n_scored);
        printf(", \"ppl\": %.6f, \"ppl_full\": %.6f, \"ppl_ratio\": %.6f, \"top1_agree\": %.6f", ppl,
               ppl_full, ppl / ppl_full, (double)r->agree / r->n_scored);
    } else {
        printf(
            ", \"passkey_acc\": %.6f, \"passkey_acc_full\": %.6f, \"passkey_n\": %d, \"passkey_tokens\": %d",
            (double)r->pk_ok / r->pk_n, (double)full->pk_ok / full->pk_n, r->pk_n, c->pk[c->n_pk - 1].n);
    }
    fputs("}\n", stdout);
}

static void print_table(struct eval_ctx *c, const struct eval_ref *ref, const struct eval_result *full,
                        const struct eval_result *r) {
    const struct model_config *mc = model_get_config(c->m);
    char label[96], heads[512];
    config_label(c->p, label, sizeof label);
    printf("kvchat eval: %s (%s) on %s\n", mc->name, mc->arch_name, c->be->ops->name);
    if (c->n_pk == 0) {
        printf(
            "text: %s, %d tokens: a %d-token prompt (prefilled, profiled), then %d decode steps; %d tokens "
            "scored\n\n",
            c->text_name, c->n_tok, c->n_prompt, r->n_gen, r->n_scored);
        printf("%-26s %10s %9s %9s %12s %9s %9s  %s\n", "cache", "ppl", "ppl ratio", "top-1", "kv bytes",
               "saving", "mean sav", "heads");
        const struct eval_result *rows[2] = {full, r};
        for (int i = 0; i < 2; i++) {
            const struct eval_result *x = rows[i];
            double ppl = exp(x->nll / x->n_scored), ppl_full = exp(ref->nll / x->n_scored);
            heads_line(&x->kv, heads, sizeof heads);
            printf("%-26s %10.4f %9.4f %8.1f%% %12llu %8.1f%% %8.1f%%  %s\n", i ? label : "full (reference)",
                   ppl, ppl / ppl_full, 100.0 * (i ? (double)x->agree / x->n_scored : 1.0),
                   (unsigned long long)x->kv.kv_bytes, 100.0 * saving_of(&x->kv), 100.0 * x->saving_mean,
                   heads);
        }
        printf("\nsaving = 1 - kv_bytes / fp16 K+V of every token in context (%llu bytes), at the last step; "
               "mean "
               "sav = its mean over the decode steps\n",
               (unsigned long long)r->kv.kv_bytes_full);
    } else {
        printf("passkey: %d prompts of ~%d tokens (key at depths 0.1 ... 0.9, %d seeds), greedy answer\n\n",
               c->n_pk, c->pk[c->n_pk - 1].n, PK_N_SEEDS);
        printf("%-26s %10s %12s %9s  %s\n", "cache", "accuracy", "kv bytes", "mean sav",
               "heads (last prompt)");
        const struct eval_result *rows[2] = {full, r};
        for (int i = 0; i < 2; i++) {
            const struct eval_result *x = rows[i];
            heads_line(&x->kv, heads, sizeof heads);
            printf("%-26s %4d/%-5d %12llu %8.1f%%  %s\n", i ? label : "full (reference)", x->pk_ok, x->pk_n,
                   (unsigned long long)x->kv.kv_bytes, 100.0 * x->saving_mean, heads);
        }
    }
}

// ---- the session `eval --sweep` drives (app/eval.h) ----------------------------------------------------

struct eval_session {
    struct eval_ctx c;
    struct eval_ref ref;     // the full cache's pass
    struct eval_result full; // and its own numbers
    struct eval_row full_row;
};

// The row of result r (r's kv snapshot is copied: out owns its arrays).
static int row_from(const struct eval_session *s, const struct eval_result *r, struct eval_row *out) {
    memset(out, 0, sizeof *out);
    if (s->c.n_pk == 0 && r->n_scored > 0) {
        out->ppl = exp(r->nll / r->n_scored);
        out->ppl_full = exp(s->ref.nll / r->n_scored);
        out->top1_agree = (double)r->agree / r->n_scored;
    }
    out->pk_ok = r->pk_ok;
    out->pk_n = r->pk_n;
    out->kv_saving = saving_of(&r->kv);
    out->kv_saving_mean = r->saving_mean;
    out->kept_mean = r->kept_mean;
    return kv_stats_copy(&out->kv, &r->kv);
}

void eval_session_close(struct eval_session *s) {
    if (!s) return;
    free(s->ref.top1);
    kv_stats_release(&s->ref.kv);
    kv_stats_release(&s->full.kv);
    kv_stats_release(&s->full_row.kv);
    ctx_free(&s->c);
    free(s);
}

struct eval_session *eval_session_open(const struct app_params *p, char *err, size_t errlen) {
    struct eval_session *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct eval_ctx *c = &s->c;
    if (ctx_init(c, p, err, errlen)) goto fail;
    if (p->task) {
        int room = c->n_ctx - PK_ANSWER_TOKENS;
        if (pk_build(c, p->eval_tokens < room ? p->eval_tokens : room, err, errlen)) goto fail;
    } else {
        if (load_text(c, err, errlen)) goto fail;
        s->ref.top1 = malloc((size_t)c->n_tok * sizeof *s->ref.top1);
        if (!s->ref.top1) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    struct app_params pf = *p; // the reference: full cache, no quantization
    pf.kv_policy = KV_POLICY_FULL;
    pf.kv_bits = 16;
    if (eval_run_config(c, &pf, NULL, &s->ref, &s->full, err, errlen)) goto fail;
    s->full.agree = s->full.n_scored;
    if (row_from(s, &s->full, &s->full_row)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return s;
fail:
    eval_session_close(s);
    return NULL;
}

int eval_session_run(struct eval_session *s, const struct app_params *cfg, struct eval_row *out, char *err,
                     size_t errlen) {
    struct eval_result r;
    if (eval_run_config(&s->c, cfg, &s->ref, NULL, &r, err, errlen)) {
        kv_stats_release(&r.kv);
        return -1;
    }
    int rc = row_from(s, &r, out);
    kv_stats_release(&r.kv);
    if (rc) snprintf(err, errlen, "out of memory");
    return rc;
}

const struct eval_row *eval_session_full(const struct eval_session *s) { return &s->full_row; }

void eval_session_info(const struct eval_session *s, struct eval_info *out) {
    const struct model_config *mc = model_get_config(s->c.m);
    memset(out, 0, sizeof *out);
    snprintf(out->model, sizeof out->model, "%s", mc->name);
    snprintf(out->arch, sizeof out->arch, "%s", mc->arch_name);
    snprintf(out->device, sizeof out->device, "%s", s->c.be->ops->name);
    out->passkey = s->c.n_pk > 0;
    snprintf(out->text, sizeof out->text, "%s", out->passkey ? "passkey" : s->c.text_name);
    out->n_tok = out->passkey ? s->c.pk[s->c.n_pk - 1].n : s->c.n_tok;
    out->n_prompt = out->passkey ? s->c.n_pk : s->c.n_prompt;
}

// ---- the mode -----------------------------------------------------------------------------------------

int app_eval(const struct app_params *p) {
    if (p->sweep) return app_eval_sweep(p);
    char err[1024];
    struct eval_session *s = eval_session_open(p, err, sizeof err);
    if (!s) {
        fprintf(stderr, "kvchat: eval: %s\n", err);
        return 1;
    }
    struct eval_result r;
    if (eval_run_config(&s->c, p, &s->ref, NULL, &r, err, sizeof err)) {
        fprintf(stderr, "kvchat: eval: %s\n", err);
        kv_stats_release(&r.kv);
        eval_session_close(s);
        return 1;
    }
    if (p->json)
        print_json(&s->c, &s->ref, &s->full, &r);
    else
        print_table(&s->c, &s->ref, &s->full, &r);
    if (getenv("KVCHAT_EVAL_VERBOSE")) // per head: policy, profiled recovery (mean, min over the group), held
        for (int i = 0; i < r.kv.n_layer * r.kv.n_head_kv; i++) {
            const struct kv_head_stats *h = &r.kv.heads[i];
            fprintf(stderr, "layer %2d kv head %d: %-26s recovery %.4f (min %.4f), holds %d of %d\n",
                    i / r.kv.n_head_kv, i % r.kv.n_head_kv, kv_comps_name(h->comps), (double)h->recovery,
                    (double)h->recovery_min, h->retained, r.kv.n_past);
        }
    kv_stats_release(&r.kv);
    eval_session_close(s);
    return 0;
}
