// tests/tools/bench_matmul.c — CPU matmul throughput on TinyLlama-1.1B shapes (Q4_K_M mix, Q8_0), plus a
// streaming-read bandwidth estimate, reported as the implied tokens/s of the whole model's matmuls.
//
// usage: bench_matmul [-t THREADS] [-r REPS] [-n N_TOK,...] [-m q4km|q8_0|f16|...,...] [--scalar] [--int8] [--no-bw]
//                     [--attn CTX,...]   (decode attention instead: 22 layers, 32 heads / 4 KV heads, head_dim 64)
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kn.h"
#include "kernels/kn_cpu_impl.h"
#include "kvcache/kv_quant_math.h"

#define N_LAYER 22
#define DIM 2048
#define KV_DIM 256
#define FF 5632
#define VOCAB 32000

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 0x243f6a8885a308d3ULL;
static uint64_t rnd64(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

// Random quantised weights: random code bytes (every pattern is a valid block) with sane block scales.
static void fill_weights(int type, uint8_t *w, size_t nbytes) {
    for (size_t i = 0; i + 8 <= nbytes; i += 8) {
        uint64_t r = rnd64();
        memcpy(w + i, &r, 8);
    }
    size_t bb = kn_type_block_bytes(type);
    kn_half d = kn_float_to_half(0.001f);
    for (size_t off = 0; off + bb <= nbytes; off += bb) {
        uint8_t *p = w + off;
        switch (type) {
        case KN_F16: case KN_BF16: { kn_half h = (kn_half)(0x3000 | (rnd64() & 0x3ff)); memcpy(p, &h, 2); } break;
        case KN_F32: { float f = (float)(rnd64() & 0xffff) * 1e-5f; memcpy(p, &f, 4); } break;
        case KN_Q6_K: memcpy(p + offsetof(struct kn_block_q6_k, d), &d, 2); break;
        case KN_Q4_K: case KN_Q5_K: memcpy(p, &d, 2); memcpy(p + 2, &d, 2); break;
        case KN_Q4_1: case KN_Q5_1: memcpy(p, &d, 2); memcpy(p + 2, &d, 2); break;
        default: memcpy(p, &d, 2); break; // Q4_0, Q5_0, Q8_0: d first
        }
    }
}

struct mat {
    struct kn_tensor t;
    uint8_t *mem;
};

static int make_mat(struct kn_backend *be, struct mat *m, int type, int64_t rows, int64_t cols) {
    memset(m, 0, sizeof *m);
    size_t nb = kn_row_bytes(type, cols) * (size_t)rows;
    m->mem = aligned_alloc(64, (nb + 63) & ~(size_t)63);
    if (!m->mem) return -1;
    fill_weights(type, m->mem, nb);
    m->t.type = type;
    m->t.n_rows = rows;
    m->t.n_cols = cols;
    m->t.nbytes = nb;
    return be->ops->tensor_load(be, &m->t, m->mem);
}

// llama.cpp's Q4_K_M gives attn_v and ffn_down more bits on the first and last eighth of the layers and on
// every third layer in between (here: 12 of 22); everything else Q4_K, output Q6_K.
static int more_bits(int il) { return il < N_LAYER / 8 || il >= 7 * N_LAYER / 8 || (il - N_LAYER / 8) % 3 == 2; }

struct model {
    struct mat m[N_LAYER][7];
    struct mat out;
    size_t bytes;
};

static int make_model(struct kn_backend *be, struct model *md, const char *mix) {
    memset(md, 0, sizeof *md);
    int q4km = strcmp(mix, "q4km") == 0;
    int base = KN_Q8_0;
    if (!q4km) {
        static const struct { const char *n; int t; } names[] = {
            {"q8_0", KN_Q8_0}, {"q4_0", KN_Q4_0}, {"q4_1", KN_Q4_1}, {"q5_0", KN_Q5_0}, {"q5_1", KN_Q5_1},
            {"q4_k", KN_Q4_K}, {"q5_k", KN_Q5_K}, {"q6_k", KN_Q6_K}, {"f16", KN_F16}, {"bf16", KN_BF16},
            {"f32", KN_F32}};
        base = -1;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(mix, names[i].n) == 0) base = names[i].t;
        if (base < 0) return -1;
    }
    static const int64_t shp[7][2] = {{DIM, DIM}, {KV_DIM, DIM}, {KV_DIM, DIM}, {DIM, DIM},
                                      {FF, DIM},  {FF, DIM},     {DIM, FF}}; // q k v o gate up down
    for (int il = 0; il < N_LAYER; il++)
        for (int j = 0; j < 7; j++) {
            int type = base;
            if (q4km) type = ((j == 2 || j == 6) && more_bits(il)) ? KN_Q6_K : KN_Q4_K;
            if (make_mat(be, &md->m[il][j], type, shp[j][0], shp[j][1])) return -1;
            md->bytes += md->m[il][j].t.nbytes;
        }
    if (make_mat(be, &md->out, q4km ? KN_Q6_K : base, VOCAB, DIM)) return -1;
    md->bytes += md->out.t.nbytes;
    return 0;
}

static void free_model(struct kn_backend *be, struct model *md) {
    for (int il = 0; il < N_LAYER; il++)
        for (int j = 0; j < 7; j++) {
            be->ops->tensor_unload(be, &md->m[il][j].t);
            free(md->m[il][j].mem);
        }
    be->ops->tensor_unload(be, &md->out.t);
    free(md->out.mem);
}

// All matmuls of one forward pass over n_tok tokens (activations reused: only the matmul cost is timed).
static void forward_matmuls(struct kn_backend *be, struct model *md, float *x, float *y, int n_tok) {
    for (int il = 0; il < N_LAYER; il++)
        for (int j = 0; j < 7; j++) be->ops->matmul(be, y, &md->m[il][j].t, x, n_tok);
    be->ops->matmul(be, y, &md->out.t, x, n_tok);
}

// ---- bandwidth -------------------------------------------------------------------------------------

struct bw_arg {
    const float *p;
    size_t n;
    float sum;
};
static void *bw_thread(void *v) {
    struct bw_arg *a = v;
    size_t i = 0;
    float sum = 0;
#if defined(__AVX2__)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 32 <= a->n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a->p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a->p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a->p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a->p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int k = 0; k < 8; k++) sum += t[k];
#endif
    for (; i < a->n; i++) sum += a->p[i];
    a->sum = sum;
    return NULL;
}
static double bandwidth(int n_threads, size_t nbytes, int reps) {
    size_t n = nbytes / 4;
    float *p = aligned_alloc(64, n * 4);
    if (!p) return 0;
    for (size_t i = 0; i < n; i++) p[i] = (float)(i & 7);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        pthread_t th[64];
        struct bw_arg a[64];
        double t0 = now_s();
        for (int i = 0; i < n_threads; i++) {
            a[i].p = p + n / n_threads * i;
            a[i].n = n / n_threads;
            pthread_create(&th[i], NULL, bw_thread, &a[i]);
        }
        for (int i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    free(p);
    return (double)nbytes / best / 1e9;
}

// ---- decode attention ------------------------------------------------------------------------------

#define AT_HEAD 32
#define AT_KV 4
#define AT_D 64

struct at_layer {
    struct kv_layer_view view;
    struct kv_head_view hv[AT_KV];
    void **blocks[AT_KV]; // fp blocks then packed groups
};

// One layer's cache of ctx tokens: fp16 only (bits 0) or KIVI (the newest 128 exact, the rest in groups of 32).
static int at_build(struct kn_backend *be, struct at_layer *L, int ctx, int bits) {
    memset(L, 0, sizeof *L);
    int G = 32, n_fp = bits ? (ctx < 128 ? ctx : 128) : ctx, n_q = bits ? (ctx - n_fp) / G : 0;
    n_fp = ctx - n_q * G;
    struct kv_qfmt f = kv_qfmt_make(AT_D, G, bits ? bits : 2);
    for (int h = 0; h < AT_KV; h++) {
        int nfb = (n_fp + 31) / 32;
        L->blocks[h] = calloc((size_t)(nfb + n_q + 1), sizeof(void *));
        if (!L->blocks[h]) return -1;
        for (int b = 0; b < nfb; b++) {
            size_t nb = kv_fp_block_bytes(AT_D);
            uint8_t *p = be->ops->alloc(be, nb, KN_MEM_KV);
            if (!p) return -1;
            for (size_t i = 0; i < nb; i += 2) {
                kn_half v = kn_float_to_half((float)((int)(rnd64() % 2001) - 1000) * 1e-3f);
                memcpy(p + i, &v, 2);
            }
            for (int s = 0; s < 32; s++) kvq_fp_pos(p)[s] = n_q * G + b * 32 + s;
            L->blocks[h][b] = p;
        }
        for (int g = 0; g < n_q; g++) {
            size_t nb = kv_q_block_bytes(f);
            uint8_t *p = be->ops->alloc(be, nb, KN_MEM_KV);
            if (!p) return -1;
            for (size_t i = 0; i < nb; i++) p[i] = (uint8_t)rnd64();
            *kvq_pos_base(p) = g * G;
            *kvq_live(p) = 0xffffffffu;
            for (int t = 0; t < G; t++) kvq_pos_off(p, f)[t] = (uint16_t)t;
            for (int d = 0; d < AT_D; d++) {
                kvq_kscale(p, f)[d] = kn_float_to_half(0.1f);
                kvq_kzero(p, f)[d] = kn_float_to_half(-0.2f);
            }
            for (size_t i = 0; i < kv_q_n_vgroups(f); i++) {
                kvq_vscale(p, f)[i] = kn_float_to_half(0.1f);
                kvq_vzero(p, f)[i] = kn_float_to_half(-0.2f);
            }
            L->blocks[h][nfb + g] = p;
        }
        L->hv[h].n_fp = n_fp;
        L->hv[h].n_q = n_q;
        L->hv[h].fp_blocks = L->blocks[h];
        L->hv[h].q_blocks = L->blocks[h] + nfb;
    }
    L->view.n_head_kv = AT_KV;
    L->view.head_dim = AT_D;
    L->view.bits = bits;
    L->view.group = G;
    L->view.max_slots = ctx;
    L->view.heads = L->hv;
    return 0;
}

static void at_free(struct kn_backend *be, struct at_layer *L) {
    for (int h = 0; h < AT_KV; h++) {
        int n = (L->hv[h].n_fp + 31) / 32 + L->hv[h].n_q;
        for (int i = 0; i < n; i++) be->ops->dealloc(be, L->blocks[h][i]);
        free(L->blocks[h]);
    }
}

static int bench_attention(struct kn_backend *be, const char *ctxs, int reps) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ctxs);
    static struct at_layer layers[N_LAYER];
    float q[AT_HEAD * AT_D], out[AT_HEAD * AT_D];
    for (int i = 0; i < AT_HEAD * AT_D; i++) q[i] = (float)((int)(rnd64() % 2001) - 1000) * 1e-3f;
    printf("decode attention, 22 layers x %d heads (%d KV heads), head_dim %d\n", AT_HEAD, AT_KV, AT_D);
    for (char *cs = strtok(buf, ","); cs; cs = strtok(NULL, ",")) {
        int ctx = atoi(cs);
        for (int bits = 0; bits <= 4; bits += 2) {
            if (bits == 0 || bits == 2 || bits == 4) {
                for (int l = 0; l < N_LAYER; l++)
                    if (at_build(be, &layers[l], ctx, bits)) {
                        fprintf(stderr, "bench_matmul: out of memory for the attention cache\n");
                        return 1;
                    }
                int32_t pos = ctx;
                double best = 1e30;
                for (int r = 0; r < reps + 1; r++) {
                    double t0 = now_s();
                    for (int l = 0; l < N_LAYER; l++) {
                        struct kn_attn_args a = {out, q, &pos, 1, AT_HEAD, 0.125f, &layers[l].view, NULL, 0};
                        be->ops->attention(be, &a);
                    }
                    double t = now_s() - t0;
                    if (r && t < best) best = t;
                }
                printf("  ctx %5d %-6s: %.3f ms per token\n", ctx, bits ? (bits == 2 ? "KIVI-2" : "KIVI-4") : "fp16",
                       best * 1e3);
                for (int l = 0; l < N_LAYER; l++) at_free(be, &layers[l]);
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int n_threads = 2, reps = 5, scalar = 0, int8 = 0, do_bw = 1;
    const char *toks = "1,128", *mixes = "q4km,q8_0", *attn = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) toks = argv[++i];
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mixes = argv[++i];
        else if (!strcmp(argv[i], "--scalar")) scalar = 1;
        else if (!strcmp(argv[i], "--int8")) int8 = 1;
        else if (!strcmp(argv[i], "--no-bw")) do_bw = 0;
        else if (!strcmp(argv[i], "--attn") && i + 1 < argc) attn = argv[++i];
        else {
            fprintf(stderr, "usage: %s [-t THREADS] [-r REPS] [-n N_TOK,...] [-m q4km|q8_0|q4_0|...,...] [--scalar] "
                            "[--no-bw] [--attn CTX,...]\n", argv[0]);
            return 2;
        }
    }
    char err[256];
    struct kn_backend *be = kn_cpu_init(n_threads, err, sizeof err);
    if (!be) {
        fprintf(stderr, "bench_matmul: %s\n", err);
        return 1;
    }
    if (scalar) kn_cpu_force_scalar(be, 1);
    if (int8) kn_cpu_set_int8_act(be, 1);
    if (attn) {
        int rc = bench_attention(be, attn, reps);
        kn_free(be);
        return rc;
    }
    printf("TinyLlama-1.1B matmuls (22 layers x q,k,v,o,gate,up,down + output), %d threads%s%s\n", n_threads,
           scalar ? ", scalar kernels" : "",
           !int8 ? "" : kn_cpu_int8_batch() ? ", int8 activations" : ", int8 activations for n_tok < 8");
    if (do_bw) {
        double bw1 = bandwidth(1, (size_t)1 << 30, 3), bw2 = bandwidth(n_threads, (size_t)1 << 30, 3);
        printf("streaming read bandwidth (1 GiB sum): 1 thread %.1f GB/s, %d threads %.1f GB/s\n", bw1, n_threads,
               bw2);
    }
    float *x = malloc(sizeof(float) * 512 * FF), *y = malloc(sizeof(float) * 512 * VOCAB);
    for (size_t i = 0; i < (size_t)512 * FF; i++) x[i] = (float)((int)(rnd64() % 2001) - 1000) * 1e-3f;
    char mixbuf[256];
    snprintf(mixbuf, sizeof mixbuf, "%s", mixes);
    for (char *mix = strtok(mixbuf, ","); mix; mix = strtok(NULL, ",")) {
        struct model *md = malloc(sizeof *md);
        if (!md || make_model(be, md, mix)) {
            fprintf(stderr, "bench_matmul: cannot build model '%s'\n", mix);
            return 1;
        }
        printf("%-5s weights %.3f GB\n", mix, (double)md->bytes / 1e9);
        char tokbuf[128];
        snprintf(tokbuf, sizeof tokbuf, "%s", toks);
        char *save = NULL;
        for (char *ts = strtok_r(tokbuf, ",", &save); ts; ts = strtok_r(NULL, ",", &save)) {
            int n_tok = atoi(ts);
            if (n_tok < 1 || n_tok > 512) continue;
            forward_matmuls(be, md, x, y, n_tok); // warm-up
            double best = 1e30, worst = 0;
            for (int r = 0; r < reps; r++) {
                double t0 = now_s();
                forward_matmuls(be, md, x, y, n_tok);
                double t = now_s() - t0;
                best = t < best ? t : best;
                worst = t > worst ? t : worst;
            }
            double gmac = 0;
            for (int il = 0; il < N_LAYER; il++)
                for (int j = 0; j < 7; j++) gmac += (double)md->m[il][j].t.n_rows * md->m[il][j].t.n_cols;
            gmac = (gmac + (double)VOCAB * DIM) * n_tok / 1e9;
            printf("  %-5s n_tok %3d: %7.2f tok/s best (%.1f ms/pass, spread %.1f%%), %.1f GB/s of weights, %.1f GFLOP/s\n",
                   mix, n_tok, n_tok / best, best * 1e3, 100.0 * (worst - best) / best, (double)md->bytes / best / 1e9,
                   2 * gmac / best);
            fflush(stdout);
        }
        free_model(be, md);
        free(md);
    }
    free(x);
    free(y);
    kn_free(be);
    return 0;
}
