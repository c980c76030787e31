// app/chat_tui.c — the full-screen chat: UI loop, generation worker thread, slash commands, /save, demo and
// record aids. The only place where the TUI and the engine meet.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/json.h"
#include "app/log.h"
#include "app/modes.h"
#include "kvcache/kv_stats.h"
#include "tui/tui.h"

#define POLL_MS 40         // input poll timeout of the UI loop
#define DEMO_POLL_MS 20    // ... while the demo is typing
#define SNAPSHOT_S 0.100   // stats refresh while generating
#define DEMO_CHAR_S 0.030  // the demo's typing speed
#define DEMO_PAUSE_S 1.200 // pause after each demo reply

enum job { JOB_CHAT, JOB_REGEN };

// One exchange as /save writes it.
struct turn {
    char *user;
    char *reply;
    size_t reply_len, reply_cap;
    const char *stop; // "eos", "limit", "stopped", "context", "error", "running"
    int reset_before; // the conversation was reset just before this turn
    double seconds;
    struct engine_stats st; // scalar fields only (kv arrays released)
};

struct chat_app {
    struct engine *e;
    const struct app_params *p;
    struct tui *t;
    double t0;

    // the worker: one thread per reply. `mu` guards pend/done/result; `stop` is the engine's stop flag.
    pthread_t th;
    int running;
    enum job job;
    char *job_text;
    volatile int stop;
    pthread_mutex_t mu;
    char *pend;
    size_t pend_len, pend_cap;
    int done, result;
    double turn_start;
    struct sample {
        uint64_t kv, full;
        int n_past;
    } samples[256]; // per-token sparkline samples
    int n_samples;
    struct engine_stats tok_snap; // the worker's per-token snapshot

    // stats
    struct engine_stats snap;
    struct tui_stats ts;
    double last_snap;

    // transcript for /save
    struct turn *turns;
    int n_turns, cap_turns;
    int reset_pending;
    char *system; // current system prompt (NULL = none)

    // --record (written by the worker while a reply runs, by the UI thread otherwise)
    FILE *rec;
    uint64_t rec_seq;

    // --demo
    char **demo;
    int n_demo, demo_next;
    size_t demo_pos;
    double demo_at;
    int demo_typing;

    int slowmo_us; // $KVCHAT_SLOWMO_MS: a pause per generated piece, to watch the dashboard (and for tests)
    int quit;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void log_sink(void *ud, int level, const char *msg) { tui_log((struct tui *)ud, level, msg); }

// ---- stats -----------------------------------------------------------------------------------------------

static void to_tui_stats(const struct engine_stats *es, struct tui_stats *ts) {
    const struct kv_stats *k = &es->kv;
    int has_budget = 0;
    if (k->layer_budget)
        for (int l = 0; l < k->n_layer; l++)
            has_budget |= k->layer_budget[l] > 0;
    int nl = k->heads ? k->n_layer : 0, nh = k->heads ? k->n_head_kv : 0;
    if (tui_stats_reserve(ts, nl, nh, has_budget)) return;
    snprintf(ts->model, sizeof ts->model, "%s", es->model_name);
    snprintf(ts->arch, sizeof ts->arch, "%s", es->arch);
    snprintf(ts->device, sizeof ts->device, "%s", es->device);
    snprintf(ts->policy, sizeof ts->policy, "%s", kv_policy_name(k->policy));
    ts->bits = k->bits;
    ts->recovery_target = k->recovery_target;
    ts->n_ctx = es->n_ctx;
    ts->n_past = es->n_past;
    ts->n_prompt = es->n_prompt;
    ts->n_gen = es->n_gen;
    ts->prefill_tok_s = es->prefill_tok_s;
    ts->decode_tok_s = es->decode_tok_s;
    ts->weights_bytes = es->weights_bytes;
    ts->dev_used = es->mem.dev_used;
    ts->dev_total = es->mem.dev_total;
    ts->kv_bytes = k->kv_bytes;
    ts->kv_bytes_full = k->kv_bytes_full;
    ts->bytes_fp = k->bytes_fp;
    ts->bytes_codes = k->bytes_codes;
    ts->bytes_scales = k->bytes_scales;
    ts->bytes_meta = k->bytes_meta;
    ts->retained_tokens = k->retained_tokens;
    ts->seq = es->seq;
    for (int i = 0; i < nl * nh; i++) {
        const struct kv_head_stats *h = &k->heads[i];
        struct tui_head_stats *o = &ts->heads[i];
        o->comps = h->comps;
        o->glyph = kv_comps_glyph(h->comps);
        snprintf(o->name, sizeof o->name, "%s", kv_comps_name(h->comps));
        o->retained = h->retained;
        o->budget = h->budget;
        o->recovery = h->recovery;
        o->recovery_min = h->recovery_min;
        o->bytes = h->bytes;
    }
    if (has_budget)
        for (int l = 0; l < nl; l++)
            ts->layer_budget[l] = k->layer_budget[l];
}

static void refresh_stats(struct chat_app *a) {
    engine_snapshot(a->e, &a->snap);
    to_tui_stats(&a->snap, &a->ts);
    tui_set_stats(a->t, &a->ts);
    a->last_snap = now_s();
}

// ---- --record --------------------------------------------------------------------------------------------

static void record_line(struct chat_app *a, const struct engine_stats *s) {
    if (!a->rec || s->seq == a->rec_seq) return;
    a->rec_seq = s->seq;
    fprintf(a->rec,
            "{\"t\": %.4f, \"token\": %d, \"n_past\": %d, \"kv_bytes\": %llu, \"kv_bytes_full\": %llu, "
            "\"retained_tokens\": %lld, \"decode_tok_s\": %.3f}\n",
            now_s() - a->t0, s->n_gen, s->n_past, (unsigned long long)s->kv.kv_bytes,
            (unsigned long long)s->kv.kv_bytes_full, (long long)s->kv.retained_tokens, s->decode_tok_s);
    fflush(a->rec);
}

// ---- the worker ------------------------------------------------------------------------------------------

// Engine callback on the worker thread: queue the text for the UI thread; record per-token stats.
static int on_piece(void *ud, const char *s, size_t n) {
    struct chat_app *a = ud;
    pthread_mutex_lock(&a->mu);
    if (a->pend_len + n + 1 > a->pend_cap) {
        size_t cap = a->pend_cap ? a->pend_cap : 1024;
        while (cap < a->pend_len + n + 1)
            cap *= 2;
        char *b = realloc(a->pend, cap);
        if (b) a->pend = b, a->pend_cap = cap;
    }
    if (a->pend_len + n + 1 <= a->pend_cap) {
        memcpy(a->pend + a->pend_len, s, n);
        a->pend_len += n;
    }
    pthread_mutex_unlock(&a->mu);
    // Per-token stats: the sparkline's samples and --record. (The engine publishes its stats right after
    // this callback, so each snapshot describes the context before this piece's token.)
    engine_snapshot(a->e, &a->tok_snap);
    pthread_mutex_lock(&a->mu);
    if (a->n_samples < (int)(sizeof a->samples / sizeof a->samples[0])) {
        struct sample *sm = &a->samples[a->n_samples++];
        sm->kv = a->tok_snap.kv.kv_bytes, sm->full = a->tok_snap.kv.kv_bytes_full,
        sm->n_past = a->tok_snap.n_past;
    }
    pthread_mutex_unlock(&a->mu);
    record_line(a, &a->tok_snap);
    if (a->slowmo_us > 0 && !a->stop) usleep((useconds_t)a->slowmo_us);
    return 0;
}

static void *worker_main(void *arg) {
    struct chat_app *a = arg;
    // Asynchronous signals belong to the UI thread (their handlers only set flags). Crash signals stay
    // unblocked: a fault here must still reach the handler that restores the terminal.
    sigset_t async;
    sigemptyset(&async);
    sigaddset(&async, SIGINT);
    sigaddset(&async, SIGTERM);
    sigaddset(&async, SIGHUP);
    sigaddset(&async, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &async, NULL);
    int rc = a->job == JOB_REGEN ? engine_regen(a->e, on_piece, a, &a->stop)
                                 : engine_chat_turn(a->e, a->job_text, on_piece, a, &a->stop);
    pthread_mutex_lock(&a->mu);
    a->result = rc;
    a->done = 1;
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static struct turn *turn_new(struct chat_app *a, const char *user) {
    if (a->n_turns == a->cap_turns) {
        int cap = a->cap_turns ? a->cap_turns * 2 : 16;
        struct turn *t = realloc(a->turns, (size_t)cap * sizeof *t);
        if (!t) return NULL;
        a->turns = t;
        a->cap_turns = cap;
    }
    struct turn *t = &a->turns[a->n_turns];
    memset(t, 0, sizeof *t);
    t->user = strdup(user);
    if (!t->user) return NULL;
    t->stop = "running";
    t->reset_before = a->reset_pending;
    a->reset_pending = 0;
    a->n_turns++;
    return t;
}

static void turn_append(struct turn *t, const char *s, size_t n) {
    if (t->reply_len + n + 1 > t->reply_cap) {
        size_t cap = t->reply_cap ? t->reply_cap : 256;
        while (cap < t->reply_len + n + 1)
            cap *= 2;
        char *r = realloc(t->reply, cap);
        if (!r) return;
        t->reply = r;
        t->reply_cap = cap;
    }
    memcpy(t->reply + t->reply_len, s, n);
    t->reply_len += n;
    t->reply[t->reply_len] = 0;
}

static void start_job(struct chat_app *a, enum job job, const char *text) {
    if (a->running) {
        tui_flash(a->t, "a reply is still running: Ctrl+C stops it");
        return;
    }
    const char *user = text;
    if (job == JOB_REGEN) {
        if (a->n_turns == 0) {
            tui_chat_add(a->t, TUI_ROLE_NOTICE, "nothing to regenerate yet");
            return;
        }
        struct turn *last = &a->turns[a->n_turns - 1];
        tui_chat_drop_last(a->t, TUI_ROLE_ASSISTANT);
        last->reply_len = 0;
        if (last->reply) last->reply[0] = 0;
        last->stop = "running";
        user = last->user;
    } else {
        tui_chat_add(a->t, TUI_ROLE_USER, text);
        if (!turn_new(a, text)) {
            tui_chat_add(a->t, TUI_ROLE_ERROR, "out of memory");
            return;
        }
    }
    free(a->job_text);
    a->job_text = strdup(user);
    if (!a->job_text) {
        tui_chat_add(a->t, TUI_ROLE_ERROR, "out of memory");
        return;
    }
    a->job = job;
    a->stop = 0;
    a->done = 0;
    a->pend_len = 0;
    a->turn_start = now_s();
    tui_chat_stream(a->t, "", 0); // the reply's message, with a spinner until the first token
    tui_set_busy(a->t, 1);
    int err = pthread_create(&a->th, NULL, worker_main, a);
    if (err) {
        tui_set_busy(a->t, 0);
        tui_chat_end(a->t, NULL);
        tui_chat_notef(a->t, TUI_ROLE_ERROR, "cannot start the generation thread: %s", strerror(err));
        a->turns[a->n_turns - 1].stop = "error";
        return;
    }
    a->running = 1;
}

// Length of s[0..n) without a trailing incomplete UTF-8 sequence (a lead byte missing continuation bytes).
static size_t utf8_complete_prefix(const char *s, size_t n) {
    size_t i = n, k = 0;
    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--, k++;
    if (i == 0) return n;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 && c <= 0xF4 ? 3 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xC2 && c <= 0xDF ? 1 : 0;
    return need > k ? i - 1 : n;
}

// Moves streamed text and per-token samples from the worker to the screen and the transcript.
static void drain(struct chat_app *a) {
    struct sample sm[256];
    pthread_mutex_lock(&a->mu);
    int ns = a->n_samples;
    memcpy(sm, a->samples, (size_t)ns * sizeof *sm);
    a->n_samples = 0;
    pthread_mutex_unlock(&a->mu);
    for (int i = 0; i < ns; i++)
        tui_add_sample(a->t, sm[i].kv, sm[i].full, sm[i].n_past);
    char buf[4096];
    for (;;) {
        pthread_mutex_lock(&a->mu);
        size_t n = a->pend_len < sizeof buf ? a->pend_len : sizeof buf;
        // Never split a UTF-8 sequence: cut before a continuation byte, and hold back an incomplete
        // sequence at the very end until its remaining bytes arrive (or the reply ends).
        if (n < a->pend_len)
            while (n > 0 && ((unsigned char)a->pend[n] & 0xC0) == 0x80)
                n--;
        if (n == a->pend_len && !a->done) n = utf8_complete_prefix(a->pend, n);
        memcpy(buf, a->pend, n);
        memmove(a->pend, a->pend + n, a->pend_len - n);
        a->pend_len -= n;
        pthread_mutex_unlock(&a->mu);
        if (n == 0) return;
        tui_chat_stream(a->t, buf, n);
        if (a->n_turns > 0) turn_append(&a->turns[a->n_turns - 1], buf, n);
    }
}

static const char *stop_name(int rc) {
    switch (rc) {
    case ENGINE_STOP_EOS:
        return "eos";
    case ENGINE_STOP_LIMIT:
        return "limit";
    case ENGINE_STOP_USER:
        return "stopped";
    case ENGINE_STOP_CTX:
        return "context";
    default:
        return "error";
    }
}

static void finish_job(struct chat_app *a) {
    pthread_join(a->th, NULL);
    a->running = 0;
    drain(a);
    int rc = a->result;
    if (rc < 0) { // engine_regen: no turn to regenerate
        tui_chat_end(a->t, NULL);
        tui_chat_drop_last(a->t, TUI_ROLE_ASSISTANT);
        tui_chat_add(a->t, TUI_ROLE_NOTICE, "nothing to regenerate");
    } else {
        const char *note = NULL;
        if (rc == ENGINE_STOP_USER)
            note = "[stopped]";
        else if (rc == ENGINE_STOP_CTX)
            note = "[context full: /clear starts a new conversation]";
        else if (rc == ENGINE_STOP_ERROR)
            note = "[error: /log shows the details]";
        else if (rc == ENGINE_STOP_LIMIT)
            note = "[reply length limit]";
        tui_chat_end(a->t, note);
    }
    tui_set_busy(a->t, 0);
    tui_flash(a->t, ""); // drop "stopping..." and the like
    refresh_stats(a);
    record_line(a, &a->snap);
    if (a->n_turns > 0) {
        struct turn *t = &a->turns[a->n_turns - 1];
        t->stop = rc < 0 ? "error" : stop_name(rc);
        t->seconds = now_s() - a->turn_start;
        t->st = a->snap;
        t->st.kv.heads = NULL; // scalars only
        t->st.kv.layer_budget = NULL;
    }
    a->demo_at = now_s() + DEMO_PAUSE_S;
}

// Stops a running reply and waits for the worker.
static void stop_and_wait(struct chat_app *a) {
    if (!a->running) return;
    a->stop = 1;
    pthread_join(a->th, NULL);
    a->running = 0;
}

// ---- commands --------------------------------------------------------------------------------------------

static const char *help_text = "commands:\n"
                               "/clear           new conversation, empty KV cache\n"
                               "/regen           the last reply again\n"
                               "/system TEXT     system prompt (resets; no TEXT removes)\n"
                               "/set NAME VALUE  an option, e.g. /set kv_policy h2o\n"
                               "/show            current options\n"
                               "/save [FILE]     transcript .md + per-turn stats .json\n"
                               "/stats           statistics with exact byte counts\n"
                               "/log             recent log messages\n"
                               "/quit            leave (or Ctrl+D on an empty line)\n"
                               "keys:\n"
                               "Enter send, Alt+Enter or Ctrl+J newline, Up/Down history\n"
                               "Ctrl+C or Esc stop the reply, PgUp/PgDn scroll\n"
                               "Tab dashboard focus: arrows select a head, f freeze,\n"
                               "  z zoom, c hide; F2 freeze, F3 hide/show dashboard,\n"
                               "  F4 zoom dashboard, F12 screenshot to a text file";

static void cmd_stats(struct chat_app *a) {
    refresh_stats(a);
    const struct engine_stats *s = &a->snap;
    const struct kv_stats *k = &s->kv;
    char heads[512] = "";
    size_t o = 0;
    for (int c = 0; c < 128; c++) {
        if (!k->n_heads_by_comps[c] || o >= sizeof heads - 64) continue;
        o += (size_t)snprintf(heads + o, sizeof heads - o, "%s%s %d", o ? ", " : "",
                              kv_comps_name((uint32_t)c), k->n_heads_by_comps[c]);
    }
    double saving = k->kv_bytes_full ? 100.0 * (1.0 - (double)k->kv_bytes / (double)k->kv_bytes_full) : 0.0;
    char ratio[64] = "";
    if (k->kv_bytes && k->kv_bytes_full) {
        double r = (double)k->kv_bytes_full / (double)k->kv_bytes;
        if (r >= 1)
            snprintf(ratio, sizeof ratio, " (%.2fx smaller than fp16)", r);
        else
            snprintf(ratio, sizeof ratio, " (%.2fx larger than fp16)", 1.0 / r);
    }
    char gpu[96] = "-";
    if (s->mem.dev_total)
        snprintf(gpu, sizeof gpu, "%llu of %llu bytes", (unsigned long long)s->mem.dev_used,
                 (unsigned long long)s->mem.dev_total);
    tui_chat_notef(a->t, TUI_ROLE_NOTICE,
                   "stats: %s (%s) on %s\n"
                   "context %d/%d tokens; last turn %d prompt + %d generated tokens\n"
                   "prefill %.1f tok/s, decode %.1f tok/s\n"
                   "kv_policy %s, kv_bits %d, recovery target %.2f\n"
                   "kv_bytes %llu\n"
                   "kv_bytes_full %llu\n"
                   "saving %.1f%%%s\n"
                   "parts: codes %llu, scales %llu, fp %llu, meta %llu bytes\n"
                   "retained_tokens %lld (over %d layers x %d KV heads)\n"
                   "heads: %s\n"
                   "weights %llu bytes; GPU %s",
                   s->model_name, s->arch, s->device, s->n_past, s->n_ctx, s->n_prompt, s->n_gen,
                   s->prefill_tok_s, s->decode_tok_s, kv_policy_name(k->policy), k->bits,
                   (double)k->recovery_target, (unsigned long long)k->kv_bytes,
                   (unsigned long long)k->kv_bytes_full, saving, ratio, (unsigned long long)k->bytes_codes,
                   (unsigned long long)k->bytes_scales, (unsigned long long)k->bytes_fp,
                   (unsigned long long)k->bytes_meta, (long long)k->retained_tokens, k->n_layer, k->n_head_kv,
                   heads[0] ? heads : "-", (unsigned long long)s->weights_bytes, gpu);
}

// Creates path exclusively (never overwriting). NULL with errno set when it exists or cannot be created.
static FILE *create_new(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "w");
    if (!f) close(fd);
    return f;
}

static void write_markdown(struct chat_app *a, FILE *f, const char *when) {
    fprintf(f, "# kvchat conversation\n\n");
    fprintf(f, "- saved: %s\n", when);
    fprintf(f, "- model: %s (%s) on %s\n", a->snap.model_name, a->snap.arch, a->snap.device);
    fprintf(f, "- KV cache: %s, %d-bit\n", kv_policy_name(a->snap.kv.policy), a->snap.kv.bits);
    if (a->system) fprintf(f, "- system prompt: %s\n", a->system);
    for (int i = 0; i < a->n_turns; i++) {
        const struct turn *t = &a->turns[i];
        if (t->reset_before) fprintf(f, "\n---\n\n*(conversation reset)*\n");
        fprintf(f, "\n## You\n\n%s\n\n## kvchat\n\n%s\n", t->user, t->reply ? t->reply : "");
        if (strcmp(t->stop, "eos") != 0) fprintf(f, "\n*[%s]*\n", t->stop);
    }
}

static void write_json(struct chat_app *a, FILE *f, const char *when) {
    fputs("{\"saved\": ", f);
    app_json_str(f, when);
    fputs(", \"system_prompt\": ", f);
    if (a->system)
        app_json_str(f, a->system);
    else
        fputs("null", f);
    fputs(", \"turns\": [", f);
    for (int i = 0; i < a->n_turns; i++) {
        const struct turn *t = &a->turns[i];
        const struct engine_stats *s = &t->st;
        const struct kv_stats *k = &s->kv;
        fprintf(f, "%s\n  {\"index\": %d, \"user\": ", i ? "," : "", i + 1);
        app_json_str(f, t->user);
        fputs(", \"reply\": ", f);
        app_json_str(f, t->reply ? t->reply : "");
        fputs(", \"stop\": ", f);
        app_json_str(f, t->stop);
        double saving = k->kv_bytes_full ? 1.0 - (double)k->kv_bytes / (double)k->kv_bytes_full : 0.0;
        fprintf(
            f,
            ", \"reset_before\": %s, \"seconds\": %.3f, \"n_prompt\": %d, \"n_gen\": %d, \"n_past\": %d, "
            "\"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f, \"kv_bytes\": %llu, \"kv_bytes_full\": %llu, "
            "\"kv_saving\": %.6f, \"retained_tokens\": %lld}",
            t->reset_before ? "true" : "false", t->seconds, s->n_prompt, s->n_gen, s->n_past,
            s->prefill_tok_s, s->decode_tok_s, (unsigned long long)k->kv_bytes,
            (unsigned long long)k->kv_bytes_full, saving, (long long)k->retained_tokens);
    }
    fputs("\n], \"final\": {", f);
    app_json_stats_fields(f, &a->snap);
    fputs("}}\n", f);
}

static void cmd_save(struct chat_app *a, const char *arg) {
    char md[1024], js[1040], when[64];
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tmv);
    if (!arg || !*arg) {
        char base[64];
        strftime(base, sizeof base, "kvchat-%Y%m%d-%H%M%S", &tmv);
        snprintf(md, sizeof md, "%s.md", base);
        snprintf(js, sizeof js, "%s.json", base);
        for (int n = 2; n < 100 && (access(md, F_OK) == 0 || access(js, F_OK) == 0); n++) {
            snprintf(md, sizeof md, "%s-%d.md", base, n);
            snprintf(js, sizeof js, "%s-%d.json", base, n);
        }
    } else {
        snprintf(md, sizeof md, "%s", arg);
        size_t n = strlen(md);
        if (n > 3 && strcmp(md + n - 3, ".md") == 0)
            snprintf(js, sizeof js, "%.*s.json", (int)(n - 3), md);
        else
            snprintf(js, sizeof js, "%s.json", md);
    }
    refresh_stats(a);
    FILE *fm = create_new(md);
    if (!fm) {
        tui_chat_notef(a->t, TUI_ROLE_ERROR, "/save: %s: %s%s", md, strerror(errno),
                       errno == EEXIST ? " (not overwritten; give another name)" : "");
        return;
    }
    FILE *fj = create_new(js);
    if (!fj) {
        int e = errno;
        fclose(fm);
        remove(md);
        tui_chat_notef(a->t, TUI_ROLE_ERROR, "/save: %s: %s%s", js, strerror(e),
                       e == EEXIST ? " (not overwritten; give another name)" : "");
        return;
    }
    write_markdown(a, fm, when);
    write_json(a, fj, when);
    int bad = ferror(fm) | ferror(fj);
    bad |= fclose(fm) != 0;
    bad |= fclose(fj) != 0;
    if (bad)
        tui_chat_notef(a->t, TUI_ROLE_ERROR, "/save: writing %s or %s failed", md, js);
    else
        tui_chat_notef(a->t, TUI_ROLE_NOTICE, "saved %d turn%s to %s and %s", a->n_turns,
                       a->n_turns == 1 ? "" : "s", md, js);
}

static void conversation_reset(struct chat_app *a) {
    a->reset_pending = 1;
    tui_reset_samples(a->t);
    refresh_stats(a);
}

static int refuse_if_running(struct chat_app *a, const char *cmd) {
    if (!a->running) return 0;
    tui_chat_notef(a->t, TUI_ROLE_NOTICE, "%s: wait for the reply to finish or stop it with Ctrl+C", cmd);
    return 1;
}

static void command(struct chat_app *a, char *line) {
    char *cmd = line, *arg = line;
    while (*arg && *arg != ' ')
        arg++;
    if (*arg) *arg++ = 0;
    while (*arg == ' ')
        arg++;
    size_t al = strlen(arg);
    while (al > 0 && (arg[al - 1] == ' ' || arg[al - 1] == '\n'))
        arg[--al] = 0;

    if (!strcmp(cmd, "/help") || !strcmp(cmd, "/?")) {
        tui_chat_add(a->t, TUI_ROLE_NOTICE, help_text);
    } else if (!strcmp(cmd, "/quit") || !strcmp(cmd, "/exit")) {
        a->quit = 1;
    } else if (!strcmp(cmd, "/stats")) {
        cmd_stats(a);
    } else if (!strcmp(cmd, "/log")) {
        tui_show_log(a->t);
    } else if (!strcmp(cmd, "/show")) {
        char buf[4096];
        buf[0] = 0;
        engine_describe_options(a->e, buf, sizeof buf);
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
            buf[--n] = 0;
        tui_chat_notef(a->t, TUI_ROLE_NOTICE, "options:\n%s", buf);
    } else if (!strcmp(cmd, "/save")) {
        if (!refuse_if_running(a, "/save")) cmd_save(a, arg);
    } else if (!strcmp(cmd, "/clear")) {
        if (refuse_if_running(a, "/clear")) return;
        engine_reset(a->e);
        tui_chat_clear(a->t);
        conversation_reset(a);
        tui_chat_add(a->t, TUI_ROLE_NOTICE, "conversation cleared, KV cache emptied");
    } else if (!strcmp(cmd, "/regen")) {
        if (!refuse_if_running(a, "/regen")) start_job(a, JOB_REGEN, NULL);
    } else if (!strcmp(cmd, "/system")) {
        if (refuse_if_running(a, "/system")) return;
        char *copy = al ? strdup(arg) : NULL;
        if (al && !copy) {
            tui_chat_add(a->t, TUI_ROLE_ERROR, "out of memory");
            return;
        }
        engine_set_system(a->e, copy);
        engine_reset(a->e);
        free(a->system);
        a->system = copy;
        conversation_reset(a);
        tui_chat_notef(a->t, TUI_ROLE_NOTICE, "%s; conversation reset",
                       copy ? "system prompt set" : "system prompt removed");
    } else if (!strcmp(cmd, "/set")) {
        if (refuse_if_running(a, "/set")) return;
        char *name = arg, *value = arg;
        while (*value && *value != ' ')
            value++;
        if (*value) *value++ = 0;
        while (*value == ' ')
            value++;
        if (!*name || !*value) {
            tui_chat_add(a->t, TUI_ROLE_NOTICE, "usage: /set NAME VALUE (/show lists the options)");
            return;
        }
        char err[256] = "";
        int reset = 0;
        if (engine_set_option(a->e, name, value, &reset, err, sizeof err)) {
            tui_chat_notef(a->t, TUI_ROLE_ERROR, "/set %s: %s", name, err[0] ? err : "rejected");
            return;
        }
        if (reset) {
            conversation_reset(a);
            tui_chat_notef(a->t, TUI_ROLE_NOTICE, "%s = %s: KV cache rebuilt, conversation reset", name,
                           value);
        } else {
            tui_chat_notef(a->t, TUI_ROLE_NOTICE, "%s = %s", name, value);
        }
    } else {
        tui_chat_notef(a->t, TUI_ROLE_NOTICE, "unknown command %s: /help lists the commands", cmd);
    }
}

static void handle_line(struct chat_app *a, char *text) {
    if (text[0] == '/') {
        command(a, text);
        return;
    }
    start_job(a, JOB_CHAT, text);
}

// ---- --demo ----------------------------------------------------------------------------------------------

static int demo_load(struct chat_app *a, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#') continue;
        char **d = realloc(a->demo, (size_t)(a->n_demo + 1) * sizeof *d);
        if (!d) break;
        a->demo = d;
        a->demo[a->n_demo] = strdup(s);
        if (a->demo[a->n_demo]) a->n_demo++;
    }
    free(line);
    fclose(f);
    return 0;
}

// Types the next demo prompt one character at a time, then Enter; waits for each reply to end.
static void demo_tick(struct chat_app *a) {
    if (a->demo_next >= a->n_demo || a->running || tui_feed_pending(a->t)) return;
    double now = now_s();
    if (now < a->demo_at) return;
    const char *s = a->demo[a->demo_next];
    if (!a->demo_typing && !tui_input_empty(a->t)) return; // the user is typing: wait
    a->demo_typing = 1;
    if (s[a->demo_pos] == 0) {
        tui_feed_keys(a->t, "\r");
        a->demo_next++;
        a->demo_pos = 0;
        a->demo_typing = 0;
        a->demo_at = now + DEMO_PAUSE_S;
        if (a->demo_next == a->n_demo) a->demo_at = now; // the notice comes after the last reply
        return;
    }
    size_t n = 1;
    while (s[a->demo_pos + n] && ((unsigned char)s[a->demo_pos + n] & 0xC0) == 0x80)
        n++;
    char ch[8];
    memcpy(ch, s + a->demo_pos, n);
    ch[n] = 0;
    tui_feed_keys(a->t, ch);
    a->demo_pos += n;
    a->demo_at = now + DEMO_CHAR_S;
}

// ---- the loop --------------------------------------------------------------------------------------------

static void app_free(struct chat_app *a) {
    for (int i = 0; i < a->n_turns; i++) {
        free(a->turns[i].user);
        free(a->turns[i].reply);
    }
    free(a->turns);
    for (int i = 0; i < a->n_demo; i++)
        free(a->demo[i]);
    free(a->demo);
    free(a->job_text);
    free(a->pend);
    free(a->system);
    engine_stats_release(&a->snap);
    engine_stats_release(&a->tok_snap);
    tui_stats_release(&a->ts);
    if (a->rec) fclose(a->rec);
    pthread_mutex_destroy(&a->mu);
}

int app_chat_tui(struct engine *e, const struct app_params *p) {
    struct chat_app a;
    memset(&a, 0, sizeof a);
    a.e = e;
    a.p = p;
    a.t0 = now_s();
    pthread_mutex_init(&a.mu, NULL);
    if (p->system_prompt && p->system_prompt[0]) a.system = strdup(p->system_prompt);
    const char *slow = getenv("KVCHAT_SLOWMO_MS");
    if (slow && atoi(slow) > 0) a.slowmo_us = atoi(slow) > 10000 ? 10000000 : atoi(slow) * 1000;

    struct tui_options opt = {.no_color = p->no_color};
    char err[512];
    a.t = tui_open(&opt, p->log_file, err, sizeof err);
    if (!a.t) {
        fprintf(stderr, "kvchat: full-screen chat unavailable (%s); using line mode\n", err);
        app_free(&a);
        return app_chat_line(e, p);
    }
    app_log_set_sink(log_sink, a.t);

    refresh_stats(&a);
    tui_chat_notef(a.t, TUI_ROLE_NOTICE,
                   "kvchat: %s on %s, KV cache %s%s. Type a message and press Enter; /help lists commands.",
                   a.snap.model_name, a.snap.device, kv_policy_name(a.snap.kv.policy),
                   a.snap.kv.bits == 16  ? ""
                   : a.snap.kv.bits == 4 ? " 4-bit"
                                         : " 2-bit");
    if (p->record_file) {
        a.rec = fopen(p->record_file, "a");
        if (!a.rec)
            tui_chat_notef(a.t, TUI_ROLE_ERROR, "--record %s: %s (not recording)", p->record_file,
                           strerror(errno));
    }
    if (p->demo_file) {
        if (demo_load(&a, p->demo_file))
            tui_chat_notef(a.t, TUI_ROLE_ERROR, "--demo %s: %s", p->demo_file, strerror(errno));
        else
            tui_chat_notef(a.t, TUI_ROLE_NOTICE, "demo: %d prompt%s from %s", a.n_demo,
                           a.n_demo == 1 ? "" : "s", p->demo_file);
        a.demo_at = now_s() + 0.5;
    }
    int demo_done_said = a.n_demo == 0;

    while (!a.quit) {
        int demo_active = a.demo_next < a.n_demo && !a.running;
        char *text = NULL;
        int act = tui_step(a.t, demo_active ? DEMO_POLL_MS : POLL_MS, &text);
        if (act == TUI_ACT_QUIT) break;
        if (act == TUI_ACT_STOP && a.running) {
            a.stop = 1;
            tui_flash(a.t, "stopping the reply...");
        }
        if (act == TUI_ACT_SUBMIT && text) handle_line(&a, text);
        free(text);
        if (a.running) {
            drain(&a);
            pthread_mutex_lock(&a.mu);
            int done = a.done;
            pthread_mutex_unlock(&a.mu);
            if (done)
                finish_job(&a);
            else if (now_s() - a.last_snap >= SNAPSHOT_S)
                refresh_stats(&a);
        }
        demo_tick(&a);
        if (!demo_done_said && a.demo_next >= a.n_demo && !a.running && !tui_feed_pending(a.t)) {
            tui_chat_notef(a.t, TUI_ROLE_NOTICE, "demo finished (%d prompt%s)", a.n_demo,
                           a.n_demo == 1 ? "" : "s");
            demo_done_said = 1;
        }
        tui_draw(a.t);
    }

    // Leave: stop logging into the screen, give the terminal back at once, then wait for the worker.
    app_log_set_sink(NULL, NULL);
    a.stop = 1;
    tui_close(a.t);
    a.t = NULL;
    stop_and_wait(&a);
    if (p->json) {
        engine_snapshot(e, &a.snap);
        app_json_stats(stdout, &a.snap);
        fflush(stdout);
    }
    app_free(&a);
    return 0;
}
