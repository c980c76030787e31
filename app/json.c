// app/json.c — JSON output of run statistics.
#include "app/json.h"

#include <math.h>
#include <string.h>

#include "kvcache/kv_stats.h"

void app_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc((int)c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else if (c < 0x80) {
            fputc((int)c, f);
        } else { // copy a valid UTF-8 sequence, replace anything else with U+FFFD
            int n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
            int ok = n > 0 && c >= 0xc2 && c <= 0xf4;
            for (int i = 1; ok && i < n; i++) ok = (p[i] & 0xc0) == 0x80;
            if (ok) {
                fwrite(p, 1, (size_t)n, f);
                p += n - 1;
            } else {
                fputs("\\ufffd", f);
            }
        }
    }
    fputc('"', f);
}

static double finite_or_zero(double x) { return isfinite(x) ? x : 0.0; }

void app_json_stats_fields(FILE *f, const struct engine_stats *s) {
    const struct kv_stats *k = &s->kv;
    fputs("\"model\": ", f);
    app_json_str(f, s->model_name);
    fputs(", \"arch\": ", f);
    app_json_str(f, s->arch);
    fputs(", \"device\": ", f);
    app_json_str(f, s->device);
    fprintf(f, ", \"n_ctx\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f",
            s->n_ctx, s->n_prompt, s->n_gen, finite_or_zero(s->prefill_tok_s), finite_or_zero(s->decode_tok_s));
    fputs(", \"kv_policy\": ", f);
    app_json_str(f, kv_policy_name(k->policy));
    double saving = k->kv_bytes_full ? 1.0 - (double)k->kv_bytes / (double)k->kv_bytes_full : 0.0;
    fprintf(f, ", \"kv_bits\": %d, \"kv_bytes\": %llu, \"kv_bytes_full\": %llu, \"kv_saving\": %.6f", k->bits,
            (unsigned long long)k->kv_bytes, (unsigned long long)k->kv_bytes_full, saving);
    fprintf(f, ", \"kv_bytes_fp\": %llu, \"kv_bytes_codes\": %llu, \"kv_bytes_scales\": %llu, \"kv_bytes_meta\": %llu",
            (unsigned long long)k->bytes_fp, (unsigned long long)k->bytes_codes, (unsigned long long)k->bytes_scales,
            (unsigned long long)k->bytes_meta);
    fprintf(f, ", \"retained_tokens\": %lld, \"n_past\": %d", (long long)k->retained_tokens, k->n_past);
    // KV heads per policy name (component sets that share a name, e.g. with and without the sliding
    // window, are merged so every key appears once)
    fputs(", \"heads\": {", f);
    int first = 1;
    for (int c = 0; c < 128; c++) {
        if (!k->n_heads_by_comps[c]) continue;
        const char *name = kv_comps_name((uint32_t)c);
        int seen = 0;
        for (int d = 0; d < c && !seen; d++) seen = k->n_heads_by_comps[d] && strcmp(kv_comps_name((uint32_t)d), name) == 0;
        if (seen) continue;
        int count = 0;
        for (int d = c; d < 128; d++)
            if (k->n_heads_by_comps[d] && strcmp(kv_comps_name((uint32_t)d), name) == 0) count += k->n_heads_by_comps[d];
        fprintf(f, "%s", first ? "" : ", ");
        app_json_str(f, name);
        fprintf(f, ": %d", count);
        first = 0;
    }
    fputs("}", f);
    fprintf(f, ", \"weights_bytes\": %llu", (unsigned long long)s->weights_bytes);
    if (s->mem.dev_total)
        fprintf(f, ", \"gpu_mem_used\": %llu, \"gpu_mem_total\": %llu", (unsigned long long)s->mem.dev_used,
                (unsigned long long)s->mem.dev_total);
    else
        fputs(", \"gpu_mem_used\": null", f);
}

void app_json_stats(FILE *f, const struct engine_stats *s) {
    fputc('{', f);
    app_json_stats_fields(f, s);
    fputs("}\n", f);
}
