// app/bench.c — `kvchat bench`: prefill and decode speed, KV bytes and GPU memory at given context sizes.
// Tokens are pseudo-random ids (speed does not depend on them); decoding feeds back the greedy pick.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/json.h"
#include "app/modes.h"
#include "app/setup.h"
#include "kvcache/kv_cache.h"
#include "model/model.h"

struct bench_row {
    int ctx, n_gen;
    double prefill_tok_s, decode_tok_s;
    struct kv_stats kv;
    struct kn_mem mem;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_ctx_list(const char *s, int *out, int cap) {
    int n = 0;
    const char *p = s;
    while (*p && n < cap) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1 << 20)) return -1;
        out[n++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return n;
}

static int run_ctx(struct model *m, struct kn_backend *be, const struct app_params *p, int ctx, int n_gen,
                   struct bench_row *row, char *err, size_t errlen) {
    const struct model_config *c = model_get_config(m);
    struct kv_cache_params kp;
    app_kv_params(p, m, ctx + n_gen + 1, &kp);
    struct kv_cache *kv = kv_cache_init(be, &kp, err, errlen);
    if (!kv) return -1;
    int32_t *tok = malloc((size_t)ctx * sizeof *tok);
    int32_t *pos = malloc((size_t)ctx * sizeof *pos);
    float *logits = malloc((size_t)c->n_vocab * sizeof *logits);
    int rc = -1;
    if (!tok || !pos || !logits) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    uint64_t x = 0x243F6A8885A308D3ull;
    for (int i = 0; i < ctx; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tok[i] = (int32_t)(x % (uint64_t)c->n_vocab);
        pos[i] = i;
    }
    struct model_batch b = {.tokens = tok, .pos = pos, .n = ctx, .phase = KV_PHASE_PROMPT_END};
    double t0 = now_s();
    if (model_forward(m, kv, &b, logits, err, errlen)) goto done;
    be->ops->sync(be);
    double t_pre = now_s() - t0;
    t0 = now_s();
    for (int i = 0; i < n_gen; i++) {
        int32_t t = 0, ps = ctx + i;
        for (int v = 1; v < c->n_vocab; v++)
            if (logits[v] > logits[t]) t = v;
        struct model_batch d = {.tokens = &t, .pos = &ps, .n = 1, .phase = KV_PHASE_DECODE};
        if (model_forward(m, kv, &d, logits, err, errlen)) goto done;
    }
    be->ops->sync(be);
    double t_dec = now_s() - t0;
    row->ctx = ctx;
    row->n_gen = n_gen;
    row->prefill_tok_s = ctx / t_pre;
    row->decode_tok_s = n_gen / t_dec;
    kv_cache_stats(kv, &row->kv);
    be->ops->mem_info(be, &row->mem);
    rc = 0;
done:
    free(tok);
    free(pos);
    free(logits);
    kv_cache_free(kv);
    return rc;
}

int app_bench(const struct app_params *p) {
    char err[1024];
    int ctxs[32];
    int n_ctx = parse_ctx_list(p->ctx_list ? p->ctx_list : "128,512", ctxs, 32);
    if (n_ctx <= 0) {
        fprintf(stderr, "kvchat: --ctx expects a comma-separated list of context sizes, got '%s'\n", p->ctx_list);
        return 1;
    }
    struct kn_backend *be = app_backend_create(p, err, sizeof err);
    if (!be) {
        fprintf(stderr, "kvchat: %s\n", err);
        return 1;
    }
    struct model *m = model_load(p->model_path, be, err, sizeof err);
    if (!m) {
        fprintf(stderr, "kvchat: %s\n", err);
        kn_free(be);
        return 1;
    }
    const struct model_config *c = model_get_config(m);
    struct bench_row *rows = calloc((size_t)n_ctx, sizeof *rows);
    int status = 0;
    // which activations the CPU matmuls use (--exact-matmul; batches only with the VNNI GEMM), so that a result
    // says how it was made
    int on_cpu = strcmp(be->ops->name, "cpu") == 0;
    const char *act = !on_cpu ? "n/a" : p->int8_matmul ? "int8" : "fp32";
    const char *pact = !on_cpu ? "n/a" : p->int8_matmul && kn_cpu_int8_batch() ? "int8" : "fp32";
    if (!p->json)
        printf("model %s (%s, %s weights, %.1f MiB) on %s, kv-policy %s, kv-bits %d, activations: decode %s, "
               "prefill %s\n"
               "%8s %14s %14s %14s %14s %9s\n",
               c->name, c->arch_name, kn_type_name(c->weight_type), model_weight_bytes(m) / 1048576.0, be->ops->name,
               kv_policy_name(p->kv_policy), p->kv_bits, act, pact, "ctx", "prefill tok/s", "decode tok/s", "kv bytes",
               "fp16 bytes", "saving");
    for (int i = 0; i < n_ctx && rows; i++) {
        if (ctxs[i] + p->bench_gen + 1 > (1 << 20)) {
            status = 1;
            break;
        }
        if (run_ctx(m, be, p, ctxs[i], p->bench_gen, &rows[i], err, sizeof err)) {
            fprintf(stderr, "kvchat: bench at ctx %d: %s\n", ctxs[i], err);
            status = 1;
            n_ctx = i;
            break;
        }
        const struct kv_stats *k = &rows[i].kv;
        if (!p->json) {
            double saving = k->kv_bytes_full ? 1.0 - (double)k->kv_bytes / (double)k->kv_bytes_full : 0.0;
            printf("%8d %14.2f %14.2f %14llu %14llu %8.1f%%\n", ctxs[i], rows[i].prefill_tok_s, rows[i].decode_tok_s,
                   (unsigned long long)k->kv_bytes, (unsigned long long)k->kv_bytes_full, 100.0 * saving);
            if (rows[i].mem.dev_total)
                printf("%8s gpu memory used %.1f MiB of %.1f MiB (ours: peak %.1f MiB)\n", "",
                       rows[i].mem.dev_used / 1048576.0, rows[i].mem.dev_total / 1048576.0,
                       rows[i].mem.ours_peak / 1048576.0);
            fflush(stdout);
        }
    }
    if (p->json && rows) {
        printf("{\"model\": ");
        app_json_str(stdout, c->name);
        printf(", \"arch\": ");
        app_json_str(stdout, c->arch_name);
        printf(", \"device\": ");
        app_json_str(stdout, be->ops->name);
        printf(", \"weights\": \"%s\", \"weights_bytes\": %llu, \"kv_policy\": \"%s\", \"kv_bits\": %d, "
               "\"decode_act\": \"%s\", \"prefill_act\": \"%s\", \"rows\": [",
               kn_type_name(c->weight_type), (unsigned long long)model_weight_bytes(m), kv_policy_name(p->kv_policy),
               p->kv_bits, act, pact);
        for (int i = 0; i < n_ctx; i++) {
            const struct kv_stats *k = &rows[i].kv;
            double saving = k->kv_bytes_full ? 1.0 - (double)k->kv_bytes / (double)k->kv_bytes_full : 0.0;
            printf("%s{\"ctx\": %d, \"n_gen\": %d, \"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f, \"kv_bytes\": %llu, "
                   "\"kv_bytes_full\": %llu, \"kv_saving\": %.6f, \"retained_tokens\": %lld, ",
                   i ? ", " : "", rows[i].ctx, rows[i].n_gen, rows[i].prefill_tok_s, rows[i].decode_tok_s,
                   (unsigned long long)k->kv_bytes, (unsigned long long)k->kv_bytes_full, saving,
                   (long long)k->retained_tokens);
            if (rows[i].mem.dev_total)
                printf("\"gpu_mem_used\": %llu, \"gpu_mem_total\": %llu, \"backend_peak_bytes\": %llu}",
                       (unsigned long long)rows[i].mem.dev_used, (unsigned long long)rows[i].mem.dev_total,
                       (unsigned long long)rows[i].mem.ours_peak);
            else
                printf("\"gpu_mem_used\": null, \"backend_peak_bytes\": %llu}", (unsigned long long)rows[i].mem.ours_peak);
        }
        printf("]}\n");
    }
    if (rows)
        for (int i = 0; i < n_ctx; i++) kv_stats_release(&rows[i].kv);
    free(rows);
    model_free(m);
    kn_free(be);
    return status;
}
