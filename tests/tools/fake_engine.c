// tests/tools/fake_engine.c — a stand-in engine for developing and demoing the TUI without a model: streams
// canned text and fabricates KV stats (any layers x heads, changing policies and retained counts, optional
// GPU). Build: make CUDA=0 build/cpu/libkvchat.a && cc -D_GNU_SOURCE -I. -std=c11 tests/tools/fake_engine.c
//        build/cpu/libkvchat.a -lsentencepiece -lncursesw -lpthread -lm -lstdc++ -o /tmp/fake_kvchat
// Run:   /tmp/fake_kvchat [--layers 22] [--heads 4] [--gpu] [--slow] [kvchat TUI options: --no-color ...]
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/engine.h"
#include "app/modes.h"
#include "app/params.h"
#include "kvcache/kv_stats.h"

struct engine {
    struct app_params p;
    pthread_mutex_t mu;
    struct engine_stats snap;
    int n_layer, n_head, gpu, slow;
    int n_past, turn;
    char *last_user;
    char system[256];
};

static const char *story =
    "Once upon a time, in a small town by the sea, there lived a curious cat named Miso. "
    "Every morning Miso walked to the harbour to count the boats. "
    "\xe4\xb8\x80\xe3\x80\x81\xe4\xba\x8c\xe3\x80\x81"
    "\xe4\xb8\x89 \xe2\x80\x94 he counted in every language he knew, and sometimes in emoji "
    "\xf0\x9f\x90\x9f\xf0\x9f"
    "\x90\x9f. One day a storm came, and the boats stayed home.\n\nMiso waited on the pier until the sky "
    "cleared, "
    "then he went back to count them again, very carefully, one by one.";

static void fabricate(struct engine *e) {
    struct kv_stats *k = &e->snap.kv;
    kv_stats_alloc(k, e->n_layer, e->n_head);
    static const uint32_t cyc[] = {KV_C_SPECIAL, KV_C_SPECIAL | KV_C_PUNCT,
                                   KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ,
                                   KV_C_SPECIAL | KV_C_PUNCT | KV_C_FREQ | KV_C_LOCAL, KV_C_FULL};
    k->head_dim = 64;
    k->n_ctx = e->p.n_ctx > 0 ? e->p.n_ctx : 2048;
    k->n_past = e->n_past;
    k->policy = e->p.kv_policy;
    k->bits = e->p.kv_bits;
    k->recovery_target = e->p.recovery;
    memset(k->n_heads_by_comps, 0, sizeof k->n_heads_by_comps);
    k->kv_bytes = k->kv_bytes_full = k->bytes_fp = k->bytes_codes = k->bytes_scales = k->bytes_meta = 0;
    k->retained_tokens = 0;
    for (int l = 0; l < e->n_layer; l++) {
        int window = (e->n_layer > 10 && l % 6 != 5) ? 128 : 0; // gemma3-like sliding layers
        for (int h = 0; h < e->n_head; h++) {
            struct kv_head_stats *hs = &k->heads[l * e->n_head + h];
            uint32_t c = window ? (KV_C_FULL | KV_C_WINDOW) : cyc[(l * 7 + h * 3 + e->turn) % 5];
            hs->comps = c;
            int keep = e->n_past;
            if (window && keep > window) keep = window;
            if (!(c & KV_C_FULL)) keep = (int)(e->n_past * (0.1 + 0.2 * __builtin_popcount(c)));
            if (keep > e->n_past) keep = e->n_past;
            hs->retained = keep;
            hs->budget = c & KV_C_FULL ? -1 : keep + 16;
            hs->recovery = c & KV_C_FULL ? 1.0f : 0.91f + 0.01f * (float)((l + h) % 8);
            hs->recovery_min = hs->recovery - 0.03f;
            uint64_t tokbytes =
                4u * (uint64_t)k->head_dim * (k->bits == 16 ? 1 : 1) * (uint64_t)k->bits / 16 + 8;
            hs->bytes = (uint64_t)keep * tokbytes;
            k->kv_bytes += hs->bytes;
            k->bytes_fp += (uint64_t)keep * 8;
            if (k->bits == 16) {
                k->bytes_fp += (uint64_t)keep * (tokbytes - 8);
            } else {
                k->bytes_codes += (uint64_t)keep * (tokbytes - 8) * 3 / 4;
                k->bytes_scales += (uint64_t)keep * (tokbytes - 8) / 4;
            }
            int full = window && e->n_past > window ? window : e->n_past;
            k->kv_bytes_full += (uint64_t)full * 4 * k->head_dim;
            k->retained_tokens += keep;
            k->n_heads_by_comps[c & 127]++;
        }
        k->layer_budget[l] = 0;
    }
    k->bytes_meta = k->kv_bytes - k->bytes_fp - k->bytes_codes - k->bytes_scales;
    snprintf(e->snap.model_name, sizeof e->snap.model_name, "fake-%dx%d", e->n_layer, e->n_head);
    snprintf(e->snap.arch, sizeof e->snap.arch, "fake");
    snprintf(e->snap.device, sizeof e->snap.device, "%s", e->gpu ? "cuda (fake H100)" : "cpu");
    e->snap.n_ctx = k->n_ctx;
    e->snap.n_past = e->n_past;
    e->snap.weights_bytes = 512ull << 20;
    if (e->gpu) {
        e->snap.mem.dev_total = 80ull << 30;
        e->snap.mem.dev_used = (3ull << 30) + k->kv_bytes;
    }
    e->snap.seq++;
}

struct engine *engine_init(const struct app_params *p, char *err, size_t errlen) {
    (void)err, (void)errlen;
    struct engine *e = calloc(1, sizeof *e);
    e->p = *p;
    pthread_mutex_init(&e->mu, NULL);
    e->n_layer = 5, e->n_head = 4;
    fabricate(e);
    return e;
}

void engine_free(struct engine *e) {
    kv_stats_release(&e->snap.kv);
    free(e->last_user);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static int stream(struct engine *e, const char *prompt, engine_piece_cb cb, void *ud,
                  const volatile int *stop) {
    pthread_mutex_lock(&e->mu);
    e->n_past += (int)strlen(prompt) / 4 + 8;
    e->snap.n_prompt = (int)strlen(prompt) / 4 + 8;
    e->snap.prefill_tok_s = 4321.5;
    e->snap.n_gen = 0;
    e->turn++;
    fabricate(e);
    pthread_mutex_unlock(&e->mu);
    usleep(300000); // "prefill": the spinner shows
    const char *s = story;
    int why = ENGINE_STOP_EOS;
    while (*s) {
        if (stop && *stop) {
            why = ENGINE_STOP_USER;
            break;
        }
        if (e->n_past + 1 >= (e->p.n_ctx > 0 ? e->p.n_ctx : 2048)) {
            why = ENGINE_STOP_CTX;
            break;
        }
        size_t n = 1;
        while (s[n] && s[n] != ' ' && n < 12)
            n++; // a "token": up to the next space
        if (cb(ud, s, n)) {
            why = ENGINE_STOP_USER;
            break;
        }
        s += n;
        pthread_mutex_lock(&e->mu);
        e->n_past++;
        e->snap.n_gen++;
        e->snap.decode_tok_s = 25.0 + (e->n_past % 7);
        fabricate(e);
        pthread_mutex_unlock(&e->mu);
        usleep(e->slow ? 200000 : 30000);
    }
    return why;
}

int engine_chat_turn(struct engine *e, const char *user_text, engine_piece_cb cb, void *ud,
                     const volatile int *stop) {
    free(e->last_user);
    e->last_user = strdup(user_text);
    return stream(e, user_text, cb, ud, stop);
}

int engine_regen(struct engine *e, engine_piece_cb cb, void *ud, const volatile int *stop) {
    if (!e->last_user) return -1;
    return stream(e, e->last_user, cb, ud, stop);
}

int engine_complete(struct engine *e, const char *text, engine_piece_cb cb, void *ud,
                    const volatile int *stop) {
    return stream(e, text, cb, ud, stop);
}

void engine_reset(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    e->n_past = 0;
    fabricate(e);
    pthread_mutex_unlock(&e->mu);
}

int engine_set_system(struct engine *e, const char *text) {
    snprintf(e->system, sizeof e->system, "%s", text ? text : "");
    return 0;
}

int engine_set_option(struct engine *e, const char *name, const char *value, int *reset_done, char *err,
                      size_t errlen) {
    *reset_done = 0;
    if (!strcmp(name, "kv_bits")) {
        e->p.kv_bits = atoi(value);
        *reset_done = 1;
        engine_reset(e);
        return 0;
    }
    if (!strcmp(name, "temp")) {
        e->p.temp = (float)atof(value);
        return 0;
    }
    snprintf(err, errlen, "unknown option '%s'", name);
    return -1;
}

void engine_describe_options(struct engine *e, char *buf, size_t cap) {
    snprintf(buf, cap, "temp = %g\nkv_bits = %d\nlayers = %d\nheads = %d\n", (double)e->p.temp, e->p.kv_bits,
             e->n_layer, e->n_head);
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

const struct app_params *engine_params(const struct engine *e) { return &e->p; }

int main(int argc, char **argv) {
    struct app_params p;
    memset(&p, 0, sizeof p);
    p.kv_policy = KV_POLICY_FASTGEN;
    p.kv_bits = 2;
    p.recovery = 0.95f;
    p.n_ctx = 2048;
    int layers = 5, heads = 4, gpu = 0, slow = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heads") && i + 1 < argc)
            heads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc)
            p.n_ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gpu"))
            gpu = 1;
        else if (!strcmp(argv[i], "--slow"))
            slow = 1;
        else if (!strcmp(argv[i], "--no-color"))
            p.no_color = 1;
        else if (!strcmp(argv[i], "--demo") && i + 1 < argc)
            p.demo_file = argv[++i];
        else if (!strcmp(argv[i], "--record") && i + 1 < argc)
            p.record_file = argv[++i];
        else if (!strcmp(argv[i], "--log-file") && i + 1 < argc)
            p.log_file = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            p.json = 1;
    }
    char err[256];
    struct engine *e = engine_init(&p, err, sizeof err);
    e->n_layer = layers, e->n_head = heads, e->gpu = gpu, e->slow = slow;
    fabricate(e);
    int rc = app_chat_tui(e, &p);
    engine_free(e);
    return rc;
}
