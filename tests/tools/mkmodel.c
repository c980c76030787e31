// tests/tools/mkmodel.c — command-line front end to the random-weight GGUF generator (model/synth.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kernels/kn_types.h"
#include "model/synth.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mkmodel --preset tinyllama|llama7b|gemma3-270m|tiny|tiny-gemma3 [--type TYPE] -o OUT.gguf\n"
            "               [--layers N] [--vocab N] [--ctx N] [--seed N]\n"
            "TYPE: q4_k_m (default), f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k\n");
}

// Parses a weight type name into *type / *q4_k_m. 0 ok, -1 unknown.
static int parse_type(const char *s, int *type, int *q4_k_m) {
    static const struct { const char *name; int type; } names[] = {
        {"f32", KN_F32},   {"f16", KN_F16},   {"bf16", KN_BF16}, {"q4_0", KN_Q4_0}, {"q4_1", KN_Q4_1},
        {"q5_0", KN_Q5_0}, {"q5_1", KN_Q5_1}, {"q8_0", KN_Q8_0}, {"q4_k", KN_Q4_K}, {"q5_k", KN_Q5_K},
        {"q6_k", KN_Q6_K},
    };
    *q4_k_m = 0;
    if (!strcmp(s, "q4_k_m")) {
        *q4_k_m = 1;
        return 0;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!strcmp(s, names[i].name)) {
            *type = names[i].type;
            return 0;
        }
    }
    return -1;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    const char *preset = NULL, *type = "q4_k_m", *out = NULL;
    long layers = 0, vocab = 0, ctx = 0, seed = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--preset")) {
            preset = v;
        } else if (!strcmp(a, "--type")) {
            type = v;
        } else if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--layers")) {
            bad = parse_int(v, 1, 4096, &layers);
        } else if (!strcmp(a, "--vocab")) {
            bad = parse_int(v, 512, 1 << 24, &vocab);
        } else if (!strcmp(a, "--ctx")) {
            bad = parse_int(v, 1, 1 << 24, &ctx);
        } else if (!strcmp(a, "--seed")) {
            bad = parse_int(v, 0, 2147483647L, &seed);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "mkmodel: bad or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!preset || !out) {
        usage(stderr);
        return 2;
    }
    struct synth_spec s;
    if (synth_preset(&s, preset)) {
        fprintf(stderr, "mkmodel: unknown preset '%s'\n", preset);
        return 2;
    }
    if (parse_type(type, &s.wtype, &s.q4_k_m)) {
        fprintf(stderr, "mkmodel: unknown type '%s'\n", type);
        return 2;
    }
    if (layers) s.n_layer = (int)layers;
    if (vocab) s.n_vocab = (int)vocab;
    if (ctx) s.n_ctx = (int)ctx;
    if (seed >= 0) s.seed = (uint64_t)seed;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[256];
    if (synth_write_gguf(&s, out, err, sizeof err)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct stat st;
    double mb = stat(out, &st) == 0 ? (double)st.st_size / 1048576.0 : 0.0;
    printf("%s: %s %s, %d layers, %.1f MiB in %.2f s\n", out, preset, type, s.n_layer, mb,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 0;
}
