// tests/test_kn_cpu.c — the CPU backend against plain double-precision references written here.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kn.h"
#include "kernels/kn_cpu_impl.h"
#include "kernels/kn_quant.h"
#include "kvcache/kv_layout.h"
#include "tests/test.h"

// ---- helpers -------------------------------------------------------------------------------------

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_f(void) { return (float)((double)rnd_u32() / 4294967296.0 * 2.0 - 1.0); } // [-1, 1)
static void rnd_fill(float *x, size_t n, float amp) {
    for (size_t i = 0; i < n; i++) x[i] = amp * rnd_f();
}

static struct kn_backend *be1, *be2; // 1 and 2 threads

static const int all_types[] = {KN_F32, KN_F16, KN_BF16, KN_Q4_0, KN_Q4_1, KN_Q5_0,
                                KN_Q5_1, KN_Q8_0, KN_Q4_K, KN_Q5_K, KN_Q6_K};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

static kn_half rnd_scale_half(float lo, float hi) {
    float u = (rnd_f() + 1.0f) * 0.5f;
    return kn_float_to_half(lo + (hi - lo) * u);
}

// n_rows rows of n_cols random values of `type`: random code bytes everywhere (every bit pattern is a
// valid block) with block scales rewritten to moderate fp16 values.
static void *make_weights(int type, int64_t n_rows, int64_t n_cols) {
    size_t rb = kn_row_bytes(type, n_cols), n = rb * (size_t)n_rows;
    uint8_t *w = malloc(n);
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd_u32();
    size_t bb = kn_type_block_bytes(type), nb = n / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        switch (type) {
        case KN_F32: { float f = rnd_f(); memcpy(p, &f, 4); } break;
        case KN_F16: { kn_half h = kn_float_to_half(rnd_f()); memcpy(p, &h, 2); } break;
        case KN_BF16: { kn_bf16 h = kn_float_to_bf16(rnd_f()); memcpy(p, &h, 2); } break;
        case KN_Q4_0: ((struct kn_block_q4_0 *)p)->d = rnd_scale_half(-0.1f, 0.1f); break;
        case KN_Q4_1: ((struct kn_block_q4_1 *)p)->d = rnd_scale_half(0.0f, 0.1f);
            ((struct kn_block_q4_1 *)p)->m = rnd_scale_half(-0.8f, 0.0f); break;
        case KN_Q5_0: ((struct kn_block_q5_0 *)p)->d = rnd_scale_half(-0.05f, 0.05f); break;
        case KN_Q5_1: ((struct kn_block_q5_1 *)p)->d = rnd_scale_half(0.0f, 0.05f);
            ((struct kn_block_q5_1 *)p)->m = rnd_scale_half(-0.8f, 0.0f); break;
        case KN_Q8_0: ((struct kn_block_q8_0 *)p)->d = rnd_scale_half(-0.01f, 0.01f); break;
        case KN_Q4_K: ((struct kn_block_q4_k *)p)->d = rnd_scale_half(0.0f, 0.002f);
            ((struct kn_block_q4_k *)p)->dmin = rnd_scale_half(0.0f, 0.01f); break;
        case KN_Q5_K: ((struct kn_block_q5_k *)p)->d = rnd_scale_half(0.0f, 0.001f);
            ((struct kn_block_q5_k *)p)->dmin = rnd_scale_half(0.0f, 0.01f); break;
        case KN_Q6_K: ((struct kn_block_q6_k *)p)->d = rnd_scale_half(-0.0005f, 0.0005f); break;
        default: break;
        }
    }
    return w;
}

// y_ref(n_tok, N) in double from the reference dequantisation; mag = Σ|w·x| per output (error scale).
static void matmul_ref(int type, const void *w, int64_t N, int64_t K, const float *x, int n_tok, double *y,
                       double *mag) {
    float *row = malloc(sizeof(float) * (size_t)K);
    size_t rb = kn_row_bytes(type, K);
    for (int64_t r = 0; r < N; r++) {
        kn_dequant_row(type, (const uint8_t *)w + (size_t)r * rb, row, K);
        for (int t = 0; t < n_tok; t++) {
            double s = 0, m = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)row[k] * x[(size_t)t * K + k];
                s += p;
                m += fabs(p);
            }
            y[(size_t)t * N + r] = s;
            mag[(size_t)t * N + r] = m;
        }
    }
    free(row);
}

static void load_tensor(struct kn_backend *be, struct kn_tensor *t, int type, int64_t N, int64_t K, void *data) {
    memset(t, 0, sizeof *t);
    t->type = type;
    t->n_rows = N;
    t->n_cols = K;
    t->nbytes = kn_row_bytes(type, K) * (size_t)N;
    CHECK(be->ops->tensor_load(be, t, data) == 0);
}

// The int8 activation format the decode matmuls use with int8 activations (kernels/kn_cpu_q8.c), restated
// here: per block of 32 values (for every weight type) d = amax/127, q = round-half-even(x/d) computed as
// x·(127/amax). xq(n_tok, K) = q·d: what the int8 kernels multiply with, exactly.
static void act_int8_ref(int type, const float *x, int64_t K, int n_tok, double *xq, double *dmax) {
    (void)type;
    const int B = 32;
    for (int t = 0; t < n_tok; t++)
        for (int64_t b = 0; b < K; b += B) {
            const float *xb = x + (size_t)t * K + b;
            float amax = 0.0f;
            for (int i = 0; i < B; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            double d = (double)(amax / 127.0f);
            for (int i = 0; i < B; i++) {
                float v = xb[i] * id;
                double q = nearbyint((double)v); // default rounding mode: half to even, as vcvtps2dq
                xq[(size_t)t * K + b + i] = q * d;
                dmax[(size_t)t * K + b + i] = d;
            }
        }
}

// With int8 activations (the default of the app), decode calls (n_tok < 8) on quantised weights, and batch
// calls too where the build has the VNNI GEMM (kernels/kn_cpu_gemm8.c), equal the exact sum over the
// int8-rounded activations (1e-5 of Σ|w·x|), and differ from the fp32 sum by no more than the rounding allows:
// Σ_k |w_k|·d_k/2. Other calls (float weights, batches without VNNI) are the fp32 path and must be as exact.
static void check_matmul_int8(int type, const void *w, int64_t N, int64_t K, const float *x, int n_tok,
                              const double *yr, const double *mag, const struct kn_tensor *t1,
                              const struct kn_tensor *t2) {
    int q8 = (n_tok < 8 || kn_cpu_int8_batch()) && kn_q8_supported(type);
    size_t ny = (size_t)n_tok * N;
    float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    kn_cpu_set_int8_act(be1, 1);
    kn_cpu_set_int8_act(be2, 1);
    be1->ops->matmul(be1, y1, t1, x, n_tok);
    be2->ops->matmul(be2, y2, t2, x, n_tok);
    kn_cpu_set_int8_act(be1, 0);
    kn_cpu_set_int8_act(be2, 0);
    double *xq = malloc(sizeof(double) * (size_t)n_tok * K), *dq = malloc(sizeof(double) * (size_t)n_tok * K);
    if (q8) act_int8_ref(type, x, K, n_tok, xq, dq);
    float *row = malloc(sizeof(float) * (size_t)K);
    size_t rb = kn_row_bytes(type, K);
    double worst = 0, worst_bound = 0;
    int same = 1;
    for (int64_t r = 0; r < N; r++) {
        kn_dequant_row(type, (const uint8_t *)w + (size_t)r * rb, row, K);
        for (int t = 0; t < n_tok; t++) {
            size_t o = (size_t)t * N + (size_t)r;
            double s = 0, m = 0, bound = 0;
            for (int64_t k = 0; q8 && k < K; k++) {
                s += (double)row[k] * xq[(size_t)t * K + k];
                m += fabs((double)row[k] * xq[(size_t)t * K + k]);
                bound += fabs((double)row[k]) * dq[(size_t)t * K + k] * 0.5;
            }
            double e = q8 ? fabs(y1[o] - s) / (m + 1e-30) : fabs(y1[o] - yr[o]) / (mag[o] + 1e-30);
            worst = e > worst ? e : worst;
            double eb = fabs(y1[o] - yr[o]) / (bound + 1e-5 * mag[o] + 1e-30);
            worst_bound = eb > worst_bound ? eb : worst_bound;
            if (memcmp(&y1[o], &y2[o], 4) != 0) same = 0;
        }
    }
    CHECK_MSG(worst <= 1e-5, "%s int8 N=%lld K=%lld n_tok=%d: rel err %.3g vs the int8-rounded sum", kn_type_name(type),
              (long long)N, (long long)K, n_tok, worst);
    CHECK_MSG(!q8 || worst_bound <= 1.0, "%s int8 N=%lld K=%lld n_tok=%d: %.3g x the rounding bound", kn_type_name(type),
              (long long)N, (long long)K, n_tok, worst_bound);
    CHECK_MSG(same, "%s int8 N=%lld K=%lld n_tok=%d: 1 and 2 threads differ", kn_type_name(type), (long long)N,
              (long long)K, n_tok);
    free(y1); free(y2); free(xq); free(dq); free(row);
}

// ---- matmul --------------------------------------------------------------------------------------

static void check_matmul(int type, int64_t N, int64_t K, int n_tok) {
    void *w = make_weights(type, N, K);
    float *x = malloc(sizeof(float) * (size_t)n_tok * K);
    rnd_fill(x, (size_t)n_tok * K, 1.0f);
    double *yr = malloc(sizeof(double) * (size_t)n_tok * N), *mag = malloc(sizeof(double) * (size_t)n_tok * N);
    matmul_ref(type, w, N, K, x, n_tok, yr, mag);
    float *y1 = malloc(sizeof(float) * (size_t)n_tok * N), *y2 = malloc(sizeof(float) * (size_t)n_tok * N);
    float *ys = malloc(sizeof(float) * (size_t)n_tok * N);
    struct kn_tensor t1, t2;
    load_tensor(be1, &t1, type, N, K, w);
    load_tensor(be2, &t2, type, N, K, w);
    be1->ops->matmul(be1, y1, &t1, x, n_tok);
    be2->ops->matmul(be2, y2, &t2, x, n_tok);
    kn_cpu_force_scalar(be2, 1);
    be2->ops->matmul(be2, ys, &t2, x, n_tok);
    kn_cpu_force_scalar(be2, 0);
    double worst = 0, worst_s = 0;
    int same = 1;
    for (size_t i = 0; i < (size_t)n_tok * N; i++) {
        double e = fabs(y1[i] - yr[i]) / (mag[i] + 1e-30), es = fabs(ys[i] - yr[i]) / (mag[i] + 1e-30);
        worst = e > worst ? e : worst;
        worst_s = es > worst_s ? es : worst_s;
        if (memcmp(&y1[i], &y2[i], 4) != 0) same = 0;
    }
    CHECK_MSG(worst <= 1e-5, "%s N=%lld K=%lld n_tok=%d: rel err %.3g", kn_type_name(type), (long long)N,
              (long long)K, n_tok, worst);
    CHECK_MSG(worst_s <= 1e-5, "%s scalar N=%lld K=%lld n_tok=%d: rel err %.3g", kn_type_name(type),
              (long long)N, (long long)K, n_tok, worst_s);
    CHECK_MSG(same, "%s N=%lld K=%lld n_tok=%d: 1 and 2 threads differ", kn_type_name(type), (long long)N,
              (long long)K, n_tok);
    check_matmul_int8(type, w, N, K, x, n_tok, yr, mag, &t1, &t2);
    be1->ops->tensor_unload(be1, &t1);
    be2->ops->tensor_unload(be2, &t2);
    free(w); free(x); free(yr); free(mag); free(y1); free(y2); free(ys);
}

static void test_matmul(void) {
    static const int toks[] = {1, 2, 3, 4, 5, 8, 17, 33};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = all_types[ti];
        int bs = kn_type_block_size(type);
        int64_t k_small = bs == KN_QK_K ? 256 : bs == KN_QK ? 288 : 40;   // legacy: 9 blocks (8 + a tail)
        int64_t k_big = bs == KN_QK_K ? 1280 : bs == KN_QK ? 800 : 1288;  // crosses the 512-column panel
        for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
            check_matmul(type, 13, k_small, toks[i]);
            if (toks[i] == 1 || toks[i] == 3 || toks[i] == 17) check_matmul(type, 7, k_big, toks[i]);
        }
        check_matmul(type, 1, k_small, 1);
        check_matmul(type, 1, k_small, 9);
        check_matmul(type, 50, k_big, 20);
    }
    // float weights with an odd column count: every vector loop's tail
    for (int ti = 0; ti < 3; ti++)
        for (int nt = 1; nt <= 17; nt += 8) check_matmul(all_types[ti], 5, 37, nt);
    // realistic data through the reference quantiser
    int64_t N = 37, K = 512;
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = all_types[ti];
        float *src = malloc(sizeof(float) * (size_t)N * K);
        rnd_fill(src, (size_t)N * K, 0.5f);
        size_t rb = kn_row_bytes(type, K);
        uint8_t *w = malloc(rb * (size_t)N);
        for (int64_t r = 0; r < N; r++) kn_quantize_row(type, src + r * K, w + (size_t)r * rb, K);
        float *x = malloc(sizeof(float) * 12 * K);
        rnd_fill(x, 12 * (size_t)K, 2.0f);
        double *yr = malloc(sizeof(double) * 12 * N), *mag = malloc(sizeof(double) * 12 * N);
        matmul_ref(type, w, N, K, x, 12, yr, mag);
        float *y = malloc(sizeof(float) * 12 * N);
        struct kn_tensor t;
        load_tensor(be2, &t, type, N, K, w);
        for (int nt = 1; nt <= 12; nt += 11) {
            be2->ops->matmul(be2, y, &t, x, nt);
            double worst = 0;
            for (int i = 0; i < nt * N; i++) {
                double e = fabs(y[i] - yr[i]) / (mag[i] + 1e-30);
                worst = e > worst ? e : worst;
            }
            CHECK_MSG(worst <= 1e-5, "quantised %s n_tok=%d: rel err %.3g", kn_type_name(type), nt, worst);
        }
        // get_rows equals the reference dequantisation
        int32_t ids[3] = {0, 36, 5};
        float *g = malloc(sizeof(float) * 3 * K), *ref = malloc(sizeof(float) * K);
        be2->ops->get_rows(be2, g, &t, ids, 3);
        int ok = 1;
        for (int i = 0; i < 3; i++) {
            kn_dequant_row(type, w + (size_t)ids[i] * rb, ref, K);
            if (memcmp(ref, g + (size_t)i * K, sizeof(float) * K) != 0) ok = 0;
        }
        CHECK_MSG(ok, "get_rows %s", kn_type_name(type));
        be2->ops->tensor_unload(be2, &t);
        free(src); free(w); free(x); free(yr); free(mag); free(y); free(g); free(ref);
    }
}

// ---- elementwise ---------------------------------------------------------------------------------

static void test_elementwise(void) {
    // rmsnorm, in place and not
    int rows = 3, dim = 37;
    float *x = malloc(sizeof(float) * rows * dim), *y = malloc(sizeof(float) * rows * dim);
    float *wv = malloc(sizeof(float) * dim);
    rnd_fill(x, (size_t)rows * dim, 3.0f);
    rnd_fill(wv, (size_t)dim, 1.0f);
    struct kn_tensor w;
    load_tensor(be2, &w, KN_F32, 1, dim, wv);
    float eps = 1e-5f;
    be2->ops->rmsnorm(be2, y, x, &w, rows, dim, eps);
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++) {
            double ref = x[r * dim + i] * inv * wv[i];
            double e = fabs(y[r * dim + i] - ref) / (fabs(ref) + 1e-6);
            worst = e > worst ? e : worst;
        }
    }
    CHECK_MSG(worst < 1e-5, "rmsnorm rel err %.3g", worst);
    be2->ops->rmsnorm(be2, x, x, &w, rows, dim, eps);
    CHECK(memcmp(x, y, sizeof(float) * rows * dim) == 0);
    be2->ops->tensor_unload(be2, &w);

    // rope: both modes, large positions, partial rotation
    for (int mode = 0; mode <= 2; mode += 2) {
        int n_tok = 3, n_head = 2, hd = 12, n_rot = 8;
        int32_t pos[3] = {0, 7, 1000003};
        float base = 10000.0f, fs = 0.5f;
        float *q = malloc(sizeof(float) * n_tok * n_head * hd), *q0 = malloc(sizeof(float) * n_tok * n_head * hd);
        rnd_fill(q, (size_t)n_tok * n_head * hd, 1.0f);
        memcpy(q0, q, sizeof(float) * n_tok * n_head * hd);
        be2->ops->rope(be2, q, pos, n_tok, n_head, hd, n_rot, base, fs, mode);
        double we = 0;
        for (int t = 0; t < n_tok; t++)
            for (int h = 0; h < n_head; h++) {
                const float *a = q0 + (t * n_head + h) * hd;
                const float *b = q + (t * n_head + h) * hd;
                for (int i = 0; i < n_rot / 2; i++) {
                    int i0 = mode == KN_ROPE_NEOX ? i : 2 * i, i1 = mode == KN_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                    double th = (double)pos[t] * fs * pow(base, -2.0 * i / n_rot);
                    double r0 = a[i0] * cos(th) - a[i1] * sin(th), r1 = a[i0] * sin(th) + a[i1] * cos(th);
                    we = fmax(we, fmax(fabs(b[i0] - r0), fabs(b[i1] - r1)));
                }
                for (int i = n_rot; i < hd; i++) we = fmax(we, fabs(b[i] - a[i]));
            }
        CHECK_MSG(we < 2e-6, "rope mode %d err %.3g", mode, we);
        free(q);
        free(q0);
    }

    // glu both activations, odd length, large enough to use the pool
    size_t n = 20000 + 3;
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    rnd_fill(g, n, 8.0f);
    rnd_fill(u, n, 1.0f);
    for (int act = 0; act <= 1; act++) {
        be2->ops->glu(be2, o, g, u, n, act);
        double e = 0;
        for (size_t i = 0; i < n; i++) {
            double gg = g[i], ref;
            if (act == KN_ACT_SILU) ref = gg / (1 + exp(-gg)) * u[i];
            else ref = 0.5 * gg * (1 + tanh(sqrt(2 / M_PI) * (gg + 0.044715 * gg * gg * gg))) * u[i];
            e = fmax(e, fabs(o[i] - ref) / (fabs(gg * u[i]) + 1e-6));
        }
        CHECK_MSG(e < 2e-6, "glu act %d err %.3g", act, e);
    }
    // add, scale, argmax
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {5, 4, 3, 2, 1};
    be2->ops->add(be2, a, b, 5);
    be2->ops->scale(be2, a, 0.5f, 5);
    CHECK(a[0] == 3.0f && a[4] == 3.0f);
    float am[6] = {1, 9, 3, 9, -2, 0};
    CHECK_EQ_INT(be2->ops->argmax(be2, am, 6), 1);
    free(x); free(y); free(wv); free(g); free(u); free(o);
}

// ---- thread pool -----------------------------------------------------------------------------------

struct pool_ctx {
    int *hits;  // (n_tasks) times each task ran
    int *owner; // (n_tasks) section that ran it
    int section;
};
static void pool_task(void *vctx, int task, int tid) {
    struct pool_ctx *c = vctx;
    (void)tid;
    c->hits[task]++; // tasks are distinct: no two threads touch the same element
    c->owner[task] = c->section;
}

// Many short sections of varying size on pools larger than the machine: every task runs exactly once, in
// its own section.
static void test_pool(void) {
    char err[256];
    for (int nth = 2; nth <= 5; nth += 3) {
        struct kn_backend *be = kn_cpu_init(nth, err, sizeof err);
        CHECK(be != NULL);
        if (!be) return;
        int hits[64], owner[64], ok = 1;
        for (int s = 0; s < 20000 && ok; s++) {
            int n = 2 + (int)(rnd_u32() % 60);
            memset(hits, 0, sizeof hits);
            struct pool_ctx c = {hits, owner, s};
            kn_cpu_parallel((struct kn_cpu *)be, n, pool_task, &c);
            for (int t = 0; t < n; t++)
                if (hits[t] != 1 || owner[t] != s) ok = 0;
            for (int t = n; t < 64; t++)
                if (hits[t] != 0) ok = 0;
        }
        CHECK_MSG(ok, "pool of %d threads: every task exactly once", nth);
        kn_free(be);
    }
}

// ---- memory ------------------------------------------------------------------------------------------

static void test_memory(void) {
    struct kn_mem m0, m1, m2;
    be1->ops->mem_info(be1, &m0);
    void *p = be1->ops->alloc(be1, 1000, KN_MEM_KV);
    void *q = be1->ops->alloc(be1, 24, KN_MEM_SCRATCH);
    be1->ops->mem_info(be1, &m1);
    CHECK(p && q && ((uintptr_t)p % 64) == 0);
    CHECK_EQ_INT(m1.ours[KN_MEM_KV] - m0.ours[KN_MEM_KV], 1000);
    CHECK_EQ_INT(m1.ours[KN_MEM_SCRATCH] - m0.ours[KN_MEM_SCRATCH], 24);
    CHECK(m1.ours_peak >= m0.ours_peak + 1024 || m1.ours_peak >= m1.ours[0] + m1.ours[1] + m1.ours[2]);
    CHECK(m1.dev_used == 0 && m1.dev_total == 0);
    be1->ops->memset0(be1, p, 1000);
    char buf[1000];
    memset(buf, 7, sizeof buf);
    be1->ops->upload(be1, p, buf, 1000);
    memset(buf, 0, sizeof buf);
    be1->ops->download(be1, buf, p, 1000);
    CHECK(buf[0] == 7 && buf[999] == 7);
    be1->ops->dealloc(be1, p);
    be1->ops->dealloc(be1, q);
    be1->ops->mem_info(be1, &m2);
    CHECK_EQ_INT(m2.ours[KN_MEM_KV], m0.ours[KN_MEM_KV]);
    CHECK(m2.ours_peak >= m1.ours[KN_MEM_KV]);
    CHECK(be1->ops->sync(be1) == 0);
    CHECK_EQ_INT(kn_cpu_n_threads(be2), 2);
    CHECK(kn_is_cpu(be1));
}

// ---- KV cache construction helpers -----------------------------------------------------------------

struct head_build {
    int n_fp, n_q;
    void *fp[64];
    void *qb[64];
};

static float fp_k(void *blk, int D, int s, int d) {
    return kn_half_to_float(((kn_half *)((uint8_t *)blk + kv_fp_off_k(D)))[(size_t)s * D + d]);
}
static float fp_v(void *blk, int D, int s, int d) {
    return kn_half_to_float(((kn_half *)((uint8_t *)blk + kv_fp_off_v(D)))[(size_t)s * D + d]);
}
static int32_t *fp_pos(void *blk) { return (int32_t *)blk; }

// Reference attention in double over the layer (packed groups dequantised explicitly).
static void attn_ref(const struct kn_attn_args *a, double *out, double *probs) {
    const struct kv_layer_view *kv = a->kv;
    int D = kv->head_dim, grp = a->n_head / kv->n_head_kv;
    struct kv_qfmt f = kv_qfmt_make(D, kv->group, kv->bits);
    for (int hq = 0; hq < a->n_head; hq++) {
        const struct kv_head_view *hv = &kv->heads[hq / grp];
        int n_q = kv->bits ? hv->n_q : 0, G = kv->group;
        int ns = n_q * G + hv->n_fp;
        for (int i = 0; i < a->n_tok; i++) {
            const float *q = a->q + ((size_t)i * a->n_head + hq) * D;
            int64_t qp = a->q_pos[i];
            double *l = malloc(sizeof(double) * (ns + 1));
            char *vis = calloc((size_t)ns + 1, 1);
            double **vv = calloc((size_t)ns + 1, sizeof(double *));
            for (int g = 0; g < n_q; g++) {
                uint8_t *gb = hv->q_blocks[g];
                int32_t base;
                uint32_t live;
                memcpy(&base, gb, 4);
                memcpy(&live, gb + 4, 4);
                const uint16_t *po = (const uint16_t *)(gb + kv_q_off_posoff(f));
                const uint32_t *kc = (const uint32_t *)(gb + kv_q_off_kcode(f));
                const kn_half *ks = (const kn_half *)(gb + kv_q_off_kscale(f)), *kz = (const kn_half *)(gb + kv_q_off_kzero(f));
                const uint32_t *vc = (const uint32_t *)(gb + kv_q_off_vcode(f));
                const kn_half *vs = (const kn_half *)(gb + kv_q_off_vscale(f)), *vz = (const kn_half *)(gb + kv_q_off_vzero(f));
                for (int t = 0; t < G; t++) {
                    int64_t p = (int64_t)base + po[t];
                    int s = g * G + t;
                    vis[s] = (live >> t & 1) && p <= qp && (kv->window == 0 || p > qp - kv->window);
                    if (!vis[s]) continue;
                    double dot = 0;
                    vv[s] = malloc(sizeof(double) * D);
                    for (int d = 0; d < D; d++) {
                        double kd = (double)kv_code_get(kc, (size_t)d * G + t, f.B) * kn_half_to_float(ks[d]) +
                                    kn_half_to_float(kz[d]);
                        dot += q[d] * kd;
                        int vg = t * (D / f.VG) + d / f.VG;
                        vv[s][d] = (double)kv_code_get(vc, (size_t)t * D + d, f.B) * kn_half_to_float(vs[vg]) +
                                   kn_half_to_float(vz[vg]);
                    }
                    l[s] = a->scale * dot;
                }
            }
            for (int s = 0; s < hv->n_fp; s++) {
                void *blk = hv->fp_blocks[s / 32];
                int si = s % 32, idx = n_q * G + s;
                int64_t p = fp_pos(blk)[si];
                vis[idx] = p <= qp && (kv->window == 0 || p > qp - kv->window);
                if (!vis[idx]) continue;
                double dot = 0;
                vv[idx] = malloc(sizeof(double) * D);
                for (int d = 0; d < D; d++) {
                    dot += q[d] * (double)fp_k(blk, D, si, d);
                    vv[idx][d] = fp_v(blk, D, si, d);
                }
                l[idx] = a->scale * dot;
            }
            double m = -INFINITY, sum = 0;
            for (int s = 0; s < ns; s++)
                if (vis[s] && l[s] > m) m = l[s];
            for (int s = 0; s < ns; s++) sum += vis[s] ? exp(l[s] - m) : 0;
            double *o = out + ((size_t)i * a->n_head + hq) * D;
            for (int d = 0; d < D; d++) o[d] = 0;
            double *pr = probs ? probs + ((size_t)hq * a->n_tok + i) * a->probs_stride : NULL;
            if (pr)
                for (int s = 0; s < a->probs_stride; s++) pr[s] = 0;
            for (int s = 0; s < ns; s++) {
                if (!vis[s]) continue;
                double p = exp(l[s] - m) / sum;
                if (pr) pr[s] = p;
                for (int d = 0; d < D; d++) o[d] += p * vv[s][d];
                free(vv[s]);
            }
            free(l);
            free(vis);
            free(vv);
        }
    }
}

// A layer cache with random contents: per KV head n_fp fp slots and n_q packed groups.
struct layer_build {
    struct kv_layer_view view;
    struct kv_head_view hv[8];
    struct head_build hb[8];
    struct kv_qfmt f;
};

static void build_layer(struct layer_build *L, struct kn_backend *be, int n_kv, int D, int bits, int G, int n_fp,
                        int n_q, int window, int32_t pos0, int dead) {
    memset(L, 0, sizeof *L);
    L->f = kv_qfmt_make(D, G, bits ? bits : 2);
    int32_t next = pos0;
    for (int h = 0; h < n_kv; h++) {
        struct head_build *hb = &L->hb[h];
        hb->n_q = bits ? n_q : 0;
        hb->n_fp = n_fp;
        int32_t p = next;
        for (int g = 0; g < hb->n_q; g++) {
            size_t nb = kv_q_block_bytes(L->f);
            uint8_t *gb = be->ops->alloc(be, nb, KN_MEM_KV);
            for (size_t i = 0; i < nb; i++) gb[i] = (uint8_t)rnd_u32();
            int32_t base = p;
            uint32_t live = 0xffffffffu >> (32 - G);
            if (dead) live &= rnd_u32() | 1u; // some dead slots
            memcpy(gb, &base, 4);
            memcpy(gb + 4, &live, 4);
            uint16_t *po = (uint16_t *)(gb + kv_q_off_posoff(L->f));
            for (int t = 0; t < G; t++) po[t] = (uint16_t)(t * 2); // gaps: evicted tokens in between
            p += 2 * G;
            kn_half *ks = (kn_half *)(gb + kv_q_off_kscale(L->f)), *kz = (kn_half *)(gb + kv_q_off_kzero(L->f));
            for (int d = 0; d < D; d++) {
                ks[d] = rnd_scale_half(0.0f, 0.3f);
                kz[d] = rnd_scale_half(-0.5f, 0.0f);
            }
            size_t nvg = kv_q_n_vgroups(L->f);
            kn_half *vs = (kn_half *)(gb + kv_q_off_vscale(L->f)), *vz = (kn_half *)(gb + kv_q_off_vzero(L->f));
            for (size_t i = 0; i < nvg; i++) {
                vs[i] = rnd_scale_half(0.0f, 0.3f);
                vz[i] = rnd_scale_half(-0.5f, 0.0f);
            }
            hb->qb[g] = gb;
        }
        for (int b = 0; b < (n_fp + 31) / 32; b++) {
            size_t nb = kv_fp_block_bytes(D);
            uint8_t *blk = be->ops->alloc(be, nb, KN_MEM_KV);
            kn_half *k = (kn_half *)(blk + kv_fp_off_k(D)), *v = (kn_half *)(blk + kv_fp_off_v(D));
            for (int i = 0; i < 32 * D; i++) {
                k[i] = kn_float_to_half(rnd_f());
                v[i] = kn_float_to_half(rnd_f());
            }
            hb->fp[b] = blk;
        }
        // fp positions: continue after the packed ones, in a shuffled slot order
        for (int s = 0; s < n_fp; s++) fp_pos(hb->fp[s / 32])[s % 32] = p + s;
        for (int s = n_fp - 1; s > 0; s--) {
            int r = (int)(rnd_u32() % (uint32_t)(s + 1));
            int32_t *a = &fp_pos(hb->fp[s / 32])[s % 32], *c = &fp_pos(hb->fp[r / 32])[r % 32];
            int32_t tmp = *a;
            *a = *c;
            *c = tmp;
        }
        L->hv[h].n_fp = n_fp;
        L->hv[h].n_q = hb->n_q;
        L->hv[h].fp_blocks = hb->fp;
        L->hv[h].q_blocks = hb->qb;
    }
    L->view.n_head_kv = n_kv;
    L->view.head_dim = D;
    L->view.bits = bits;
    L->view.group = G;
    L->view.window = window;
    L->view.max_slots = (bits ? n_q * G : 0) + n_fp;
    L->view.heads = L->hv;
}

// fp slots in position order (as a prefill appends them), keeping the set of positions.
static void fp_in_order(struct layer_build *L) {
    for (int h = 0; h < L->view.n_head_kv; h++) {
        struct head_build *hb = &L->hb[h];
        int32_t lo = INT32_MAX;
        for (int s = 0; s < hb->n_fp; s++) lo = fp_pos(hb->fp[s / 32])[s % 32] < lo ? fp_pos(hb->fp[s / 32])[s % 32] : lo;
        for (int s = 0; s < hb->n_fp; s++) fp_pos(hb->fp[s / 32])[s % 32] = lo + s;
    }
}

static void free_layer(struct layer_build *L, struct kn_backend *be) {
    for (int h = 0; h < L->view.n_head_kv; h++) {
        for (int g = 0; g < L->hb[h].n_q; g++) be->ops->dealloc(be, L->hb[h].qb[g]);
        for (int b = 0; b < (L->hb[h].n_fp + 31) / 32; b++) be->ops->dealloc(be, L->hb[h].fp[b]);
    }
}

// Runs attention on both backends (and the forced-scalar path) and compares with the reference.
static void check_attn(const char *what, struct layer_build *L, int n_head, int n_tok, const int32_t *qpos,
                       int want_probs) {
    int D = L->view.head_dim;
    float *q = malloc(sizeof(float) * n_tok * n_head * D);
    rnd_fill(q, (size_t)n_tok * n_head * D, 2.0f);
    size_t no = (size_t)n_tok * n_head * D;
    float *o1 = malloc(sizeof(float) * no), *o2 = malloc(sizeof(float) * no), *os = malloc(sizeof(float) * no);
    int stride = L->view.max_slots + 3;
    size_t np = (size_t)n_head * n_tok * stride;
    float *p1 = want_probs ? malloc(sizeof(float) * np) : NULL;
    double *pr = want_probs ? malloc(sizeof(double) * np) : NULL;
    double *oref = malloc(sizeof(double) * no);
    struct kn_attn_args a = {o1, q, qpos, n_tok, n_head, 1.0f / sqrtf((float)D), &L->view, p1, stride};
    be1->ops->attention(be1, &a);
    a.out = o2;
    a.probs = NULL;
    be2->ops->attention(be2, &a);
    kn_cpu_force_scalar(be2, 1);
    a.out = os;
    be2->ops->attention(be2, &a);
    kn_cpu_force_scalar(be2, 0);
    a.probs = NULL;
    attn_ref(&a, oref, NULL);
    if (want_probs) {
        attn_ref(&a, oref, pr);
    }
    double e = 0, es = 0;
    for (size_t i = 0; i < no; i++) {
        e = fmax(e, fabs(o1[i] - oref[i]));
        es = fmax(es, fabs(os[i] - oref[i]));
    }
    CHECK_MSG(e <= 1e-5, "attention %s: err %.3g", what, e);
    CHECK_MSG(es <= 1e-5, "attention %s (scalar): err %.3g", what, es);
    CHECK_MSG(memcmp(o1, o2, sizeof(float) * no) == 0, "attention %s: 1 and 2 threads differ", what);
    if (want_probs) {
        double pe = 0, se = 0;
        for (int r = 0; r < n_head * n_tok; r++) {
            double s = 0, sr = 0;
            for (int j = 0; j < stride; j++) {
                s += p1[(size_t)r * stride + j];
                sr += pr[(size_t)r * stride + j];
                pe = fmax(pe, fabs(p1[(size_t)r * stride + j] - pr[(size_t)r * stride + j]));
            }
            if (sr > 0.5) se = fmax(se, fabs(s - 1.0));
            else se = fmax(se, fabs(s));
        }
        CHECK_MSG(pe <= 1e-6, "attention %s: probs err %.3g", what, pe);
        CHECK_MSG(se <= 1e-5, "attention %s: probs row sums off by %.3g", what, se);
    }
    free(q); free(o1); free(o2); free(os); free(p1); free(pr); free(oref);
}

// qp[i] = first + step·i, i < n: the query positions of a batch.
static void ramp(int32_t *qp, int n, int32_t first, int step) {
    for (int i = 0; i < n; i++) qp[i] = first + step * i;
}

static void test_attention(void) {
    struct layer_build L;
    int32_t qp[600];
    // decode, fp only, MHA / GQA / MQA, several head dims (odd ones included)
    static const int dims[] = {8, 64, 256, 320, 7, 13}; // 320: past the fp32 key tile of the SIMD logits
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int D = dims[di];
        build_layer(&L, be2, 2, D, 0, 32, 45, 0, 0, 0, 0);
        qp[0] = 1000;
        check_attn("fp-only GQA decode", &L, 6, 1, qp, 1);
        check_attn("fp-only MHA-ish", &L, 2, 1, qp, 0);
        free_layer(&L, be2);
    }
    build_layer(&L, be2, 1, 64, 0, 32, 70, 0, 0, 0, 0);
    qp[0] = 100;
    check_attn("fp-only MQA", &L, 4, 1, qp, 1);
    free_layer(&L, be2);
    // packed only and mixed, 2 and 4 bits, group 32 (SIMD) and 8/24 (portable code path)
    static const int bitsv[] = {2, 4};
    static const int groups[] = {32, 16, 8, 24};
    static const int pdims[] = {64, 8, 7, 256};
    for (int bi = 0; bi < 2; bi++)
        for (int gi = 0; gi < 4; gi++)
            for (int di = 0; di < 4; di++) {
                int G = groups[gi], D = pdims[di];
                if (D == 256 && gi) continue;
                if (D % (G < D ? G : D)) continue; // value groups must tile the head (checked below)
                char what[96];
                build_layer(&L, be2, 2, D, bitsv[bi], G, 0, 3, 0, 0, 1);
                qp[0] = 100000;
                snprintf(what, sizeof what, "packed-only B=%d G=%d D=%d", bitsv[bi], G, D);
                check_attn(what, &L, 4, 1, qp, 1);
                free_layer(&L, be2);
                build_layer(&L, be2, 2, D, bitsv[bi], G, 37, 2, 0, 5, 1);
                qp[0] = 100000;
                qp[1] = 5 + 2 * G * 2 + 20; // sees the groups and some of the fp slots
                qp[2] = 5 + 3;              // sees part of the first group only
                snprintf(what, sizeof what, "mixed B=%d G=%d D=%d", bitsv[bi], G, D);
                check_attn(what, &L, 8, 3, qp, 1);
                free_layer(&L, be2);
            }
    // a format whose value groups do not tile the head is refused with an error and zero output
    build_layer(&L, be2, 1, 64, 2, 24, 0, 0, 0, 0, 0);
    {
        float q[128], o[128];
        rnd_fill(q, 128, 1.0f);
        o[0] = 1.0f;
        qp[0] = 10;
        struct kn_attn_args a = {o, q, qp, 1, 2, 0.125f, &L.view, NULL, 0};
        be2->ops->attention(be2, &a);
        CHECK(o[0] == 0.0f && be2->ops->last_error(be2)[0] != 0);
    }
    free_layer(&L, be2);
    // sliding window over a mixed cache
    build_layer(&L, be2, 2, 64, 4, 32, 50, 3, 40, 0, 1);
    ramp(qp, 5, 60, 30);
    check_attn("sliding window", &L, 4, 5, qp, 1);
    free_layer(&L, be2);
    // nothing visible: zeros
    build_layer(&L, be2, 1, 16, 2, 32, 10, 1, 0, 500, 0);
    qp[0] = 3;
    check_attn("nothing visible", &L, 2, 1, qp, 1);
    free_layer(&L, be2);
    // empty cache
    build_layer(&L, be2, 1, 16, 0, 32, 0, 0, 0, 0, 0);
    qp[0] = 3;
    check_attn("empty", &L, 2, 1, qp, 0);
    free_layer(&L, be2);
    // prefill: causal masking inside a batch whose tokens are in the cache (positions 0..n-1, shuffled slots)
    build_layer(&L, be2, 2, 64, 0, 32, 520, 0, 0, 0, 0);
    ramp(qp, 520, 0, 1);
    check_attn("prefill 520 causal", &L, 4, 520, qp, 0);
    free_layer(&L, be2);
    build_layer(&L, be2, 2, 8, 0, 32, 100, 0, 0, 0, 0);
    ramp(qp, 100, 0, 1);
    check_attn("prefill 100 causal probs", &L, 4, 100, qp, 1);
    free_layer(&L, be2);
    build_layer(&L, be2, 1, 320, 0, 32, 45, 0, 0, 0, 0);
    ramp(qp, 45, 0, 1);
    check_attn("prefill 45 causal D=320 probs", &L, 2, 45, qp, 1);
    free_layer(&L, be2);
    // slots in position order, as a prefill writes them: the later slots of each query are skipped whole
    // (their probabilities must still be zeros); one KV head's queries follow another's on a thread
    build_layer(&L, be2, 2, 64, 0, 32, 100, 0, 0, 0, 0);
    fp_in_order(&L);
    ramp(qp, 100, 0, 1);
    check_attn("prefill 100 in order probs", &L, 4, 100, qp, 1);
    ramp(qp, 100, 99, -1); // descending: stale rows of longer queries in the scratch
    check_attn("prefill 100 in order, descending probs", &L, 4, 100, qp, 1);
    free_layer(&L, be2);
    build_layer(&L, be2, 2, 64, 4, 32, 70, 2, 0, 0, 1);
    fp_in_order(&L);
    ramp(qp, 70, 2 * 2 * 32, 1);
    check_attn("mixed, fp in order, causal probs", &L, 4, 70, qp, 1);
    free_layer(&L, be2);
    // sliding window without a packed region: the slots before the window are skipped too
    build_layer(&L, be2, 2, 64, 0, 32, 120, 0, 40, 0, 0);
    ramp(qp, 120, 0, 1);
    check_attn("prefill 120 window 40 probs", &L, 4, 120, qp, 1);
    fp_in_order(&L);
    check_attn("prefill 120 window 40 in order probs", &L, 4, 120, qp, 1);
    ramp(qp, 120, 119, -1);
    check_attn("prefill 120 window 40 in order, descending probs", &L, 2, 120, qp, 1);
    free_layer(&L, be2);
    // the default model's shape: MQA, D=256, window 512, a long in-order cache; decode and a prefill tail
    build_layer(&L, be2, 1, 256, 0, 32, 600, 0, 512, 0, 0);
    fp_in_order(&L);
    qp[0] = 599;
    check_attn("MQA D=256 window 512 decode", &L, 4, 1, qp, 1);
    ramp(qp, 40, 560, 1);
    check_attn("MQA D=256 window 512 prefill tail", &L, 4, 40, qp, 1);
    free_layer(&L, be2);
    build_layer(&L, be2, 1, 256, 0, 32, 90, 0, 17, 0, 0);
    fp_in_order(&L);
    ramp(qp, 90, 0, 1);
    check_attn("prefill 90 window 17 in order D=256 MQA probs", &L, 4, 90, qp, 1);
    free_layer(&L, be2);
    build_layer(&L, be2, 1, 320, 0, 32, 45, 0, 0, 0, 0);
    fp_in_order(&L);
    ramp(qp, 45, 44, -1);
    check_attn("prefill 45 in order D=320 probs", &L, 2, 45, qp, 1);
    free_layer(&L, be2);
}

// ---- kv_store / kv_move / kv_quant -------------------------------------------------------------------

static void test_kv_store_move(void) {
    int D = 13, nkv = 2, n_tok = 20;
    size_t nb = kv_fp_block_bytes(D);
    uint8_t *blk[2] = {be1->ops->alloc(be1, nb, KN_MEM_KV), be1->ops->alloc(be1, nb, KN_MEM_KV)};
    struct kv_slot dst[40];
    for (int i = 0; i < n_tok * nkv; i++) {
        dst[i].block = blk[i % 2];
        dst[i].slot = i / 2;
    }
    float *k = malloc(sizeof(float) * n_tok * nkv * D), *v = malloc(sizeof(float) * n_tok * nkv * D);
    rnd_fill(k, (size_t)n_tok * nkv * D, 4.0f);
    rnd_fill(v, (size_t)n_tok * nkv * D, 4.0f);
    k[0] = 1e-7f; // fp16 subnormal
    k[1] = 70000.0f; // overflows to inf
    int32_t pos[20];
    for (int i = 0; i < n_tok; i++) pos[i] = 1000 + 3 * i;
    be1->ops->kv_store(be1, dst, k, v, pos, n_tok, nkv, D);
    int ok = 1;
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < nkv; h++) {
            const struct kv_slot *s = &dst[t * nkv + h];
            if (fp_pos(s->block)[s->slot] != pos[t]) ok = 0;
            for (int d = 0; d < D; d++) {
                size_t i = ((size_t)t * nkv + h) * D + d;
                kn_half hk = ((kn_half *)((uint8_t *)s->block + kv_fp_off_k(D)))[s->slot * D + d];
                kn_half hv = ((kn_half *)((uint8_t *)s->block + kv_fp_off_v(D)))[s->slot * D + d];
                if (hk != kn_float_to_half(k[i]) || hv != kn_float_to_half(v[i])) ok = 0;
            }
        }
    CHECK_MSG(ok, "kv_store round trip");
    // move a chain: 5 -> 0, then 0 -> 1 (reads the earlier destination)
    struct kv_slot src[2] = {{blk[0], 5}, {blk[0], 0}}, to[2] = {{blk[0], 0}, {blk[1], 1}};
    be1->ops->kv_move(be1, src, to, 2, D);
    ok = fp_pos(blk[1])[1] == pos[5] && fp_pos(blk[0])[0] == pos[5];
    for (int d = 0; d < D; d++) {
        size_t i = ((size_t)5 * nkv + 0) * D + d; // block 0 slot 5 held token 5, KV head 0
        if (fp_k(blk[1], D, 1, d) != kn_half_to_float(kn_float_to_half(k[i]))) ok = 0;
        if (fp_v(blk[1], D, 1, d) != kn_half_to_float(kn_float_to_half(v[i]))) ok = 0;
    }
    CHECK_MSG(ok, "kv_move chain");
    be1->ops->dealloc(be1, blk[0]);
    be1->ops->dealloc(be1, blk[1]);
    free(k);
    free(v);
}

// Independent KIVI parameters of values x[0..n): fp16 s, z and codes.
static void kivi_ref(const float *x, int n, int B, kn_half *hs, kn_half *hz, uint32_t *codes) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
    }
    int L = (1 << B) - 1;
    *hz = kn_float_to_half(mn);
    *hs = mx > mn ? kn_float_to_half((mx - mn) / (float)L) : 0;
    float s = kn_half_to_float(*hs), z = kn_half_to_float(*hz);
    for (int i = 0; i < n; i++) {
        if (s == 0) {
            codes[i] = 0;
            continue;
        }
        double c = floor(((double)x[i] - z) / s + 0.5);
        codes[i] = (uint32_t)(c < 0 ? 0 : c > L ? L : c);
    }
}

static void test_kv_quant(void) {
    static const int cfg[][3] = {{64, 32, 2}, {64, 32, 4}, {8, 32, 2}, {7, 32, 4}, {256, 32, 2}, {64, 16, 4}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int D = cfg[ci][0], G = cfg[ci][1], B = cfg[ci][2];
        struct kv_qfmt f = kv_qfmt_make(D, G, B);
        int nvg = D / f.VG, n_tok = G;
        // n_tok tokens in fp slots (2 blocks when G = 32 is not needed: one block holds 32)
        size_t nb = kv_fp_block_bytes(D);
        uint8_t *blk = be1->ops->alloc(be1, nb, KN_MEM_KV);
        uint8_t *grp = be1->ops->alloc(be1, kv_q_block_bytes(f), KN_MEM_KV);
        uint8_t *grp2 = be1->ops->alloc(be1, kv_q_block_bytes(f), KN_MEM_KV);
        be1->ops->memset0(be1, grp, kv_q_block_bytes(f));
        be1->ops->memset0(be1, grp2, kv_q_block_bytes(f));
        float *k = malloc(sizeof(float) * n_tok * D), *v = malloc(sizeof(float) * n_tok * D);
        rnd_fill(k, (size_t)n_tok * D, 2.0f);
        rnd_fill(v, (size_t)n_tok * D, 2.0f);
        for (int d = 0; d < D; d++) v[d] = 0.25f; // a constant token: s = 0
        struct kv_slot slots[32];
        int32_t pos[32];
        for (int t = 0; t < n_tok; t++) {
            slots[t].block = blk;
            slots[t].slot = t;
            pos[t] = 500 + 2 * t;
        }
        be1->ops->kv_store(be1, slots, k, v, pos, n_tok, 1, D);
        // original fp16 values
        float *k16 = malloc(sizeof(float) * n_tok * D), *v16 = malloc(sizeof(float) * n_tok * D);
        for (int t = 0; t < n_tok; t++)
            for (int d = 0; d < D; d++) {
                k16[t * D + d] = fp_k(blk, D, t, d);
                v16[t * D + d] = fp_v(blk, D, t, d);
            }
        // values of every token, one job each, then keys of the first n_src tokens
        int n_src = G - 3;
        struct kv_qjob jobs[33];
        for (int t = 0; t < n_tok; t++) {
            memset(&jobs[t], 0, sizeof jobs[t]);
            jobs[t].kind = KV_QJOB_VALUE;
            jobs[t].group = grp;
            jobs[t].t = t;
            jobs[t].n_src = 1;
            jobs[t].src = &slots[t];
        }
        memset(&jobs[n_tok], 0, sizeof jobs[n_tok]);
        jobs[n_tok].kind = KV_QJOB_KEYS;
        jobs[n_tok].group = grp;
        jobs[n_tok].n_src = n_src;
        jobs[n_tok].src = slots;
        be1->ops->kv_quant(be1, jobs, n_tok + 1, f);

        const uint32_t *vc = (const uint32_t *)(grp + kv_q_off_vcode(f));
        const kn_half *vs = (const kn_half *)(grp + kv_q_off_vscale(f)), *vz = (const kn_half *)(grp + kv_q_off_vzero(f));
        const uint32_t *kc = (const uint32_t *)(grp + kv_q_off_kcode(f));
        const kn_half *ks = (const kn_half *)(grp + kv_q_off_kscale(f)), *kz = (const kn_half *)(grp + kv_q_off_kzero(f));
        int ok_codes = 1, ok_err = 1, ok_wb = 1;
        uint32_t codes[256];
        for (int t = 0; t < n_tok; t++)
            for (int q = 0; q < nvg; q++) {
                kn_half hs, hz;
                kivi_ref(v16 + t * D + q * f.VG, f.VG, B, &hs, &hz, codes);
                if (vs[t * nvg + q] != hs || vz[t * nvg + q] != hz) ok_codes = 0;
                float s = kn_half_to_float(hs), z = kn_half_to_float(hz);
                for (int d = 0; d < f.VG; d++) {
                    int dd = q * f.VG + d;
                    uint32_t c = kv_code_get(vc, (size_t)t * D + dd, B);
                    if (c != codes[d]) ok_codes = 0;
                    double deq = (double)c * s + z;
                    if (fabs(deq - v16[t * D + dd]) > s / 2 * 1.01 + 1e-3 * fabs(v16[t * D + dd]) + 1e-7) ok_err = 0;
                    if (fp_v(blk, D, t, dd) != kn_half_to_float(kn_float_to_half(fmaf((float)c, s, z)))) ok_wb = 0;
                }
            }
        float col[32];
        for (int d = 0; d < D; d++) {
            for (int t = 0; t < n_src; t++) col[t] = k16[t * D + d];
            kn_half hs, hz;
            kivi_ref(col, n_src, B, &hs, &hz, codes);
            if (ks[d] != hs || kz[d] != hz) ok_codes = 0;
            float s = kn_half_to_float(hs), z = kn_half_to_float(hz);
            for (int t = 0; t < G; t++) {
                uint32_t c = kv_code_get(kc, (size_t)d * G + t, B);
                if (t >= n_src) {
                    if (c != 0) ok_codes = 0;
                    continue;
                }
                if (c != codes[t]) ok_codes = 0;
                double deq = (double)c * s + z;
                if (fabs(deq - col[t]) > s / 2 * 1.01 + 1e-3 * fabs(col[t]) + 1e-7) ok_err = 0;
                if (fp_k(blk, D, t, d) != kn_half_to_float(kn_float_to_half(fmaf((float)c, s, z)))) ok_wb = 0;
            }
            for (int t = n_src; t < n_tok; t++)
                if (fp_k(blk, D, t, d) != k16[t * D + d]) ok_wb = 0; // untouched
        }
        CHECK_MSG(ok_codes, "kv_quant D=%d G=%d B=%d: codes/scales match", D, G, B);
        CHECK_MSG(ok_err, "kv_quant D=%d G=%d B=%d: error <= s/2", D, G, B);
        CHECK_MSG(ok_wb, "kv_quant D=%d G=%d B=%d: write-back equals dequantisation", D, G, B);
        int32_t base;
        uint32_t live;
        memcpy(&base, grp, 4);
        memcpy(&live, grp + 4, 4);
        const uint16_t *po = (const uint16_t *)(grp + kv_q_off_posoff(f));
        CHECK_EQ_INT(base, 500);
        CHECK_EQ_INT(live, (uint32_t)((1ull << n_src) - 1));
        int ok_pos = 1;
        for (int t = 0; t < n_src; t++)
            if (po[t] != 2 * t) ok_pos = 0;
        CHECK(ok_pos);

        // fused packed attention equals attention over the explicitly dequantised cache (the reference);
        // and attention over the write-back fp slots equals it up to fp16 rounding
        struct kv_head_view hv = {0, 1, NULL, (void *const *)&grp};
        struct kv_layer_view view = {1, D, B, G, 0, G, &hv};
        int nh = 2;
        float *q = malloc(sizeof(float) * nh * D), *o = malloc(sizeof(float) * nh * D), *o2 = malloc(sizeof(float) * nh * D);
        double *oref = malloc(sizeof(double) * nh * D);
        rnd_fill(q, (size_t)nh * D, 1.0f);
        int32_t qpos = 100000;
        struct kn_attn_args a = {o, q, &qpos, 1, nh, 1.0f / sqrtf((float)D), &view, NULL, 0};
        be2->ops->attention(be2, &a);
        attn_ref(&a, oref, NULL);
        double e = 0;
        for (int i = 0; i < nh * D; i++) e = fmax(e, fabs(o[i] - oref[i]));
        CHECK_MSG(e <= 1e-5, "packed attention after kv_quant D=%d G=%d B=%d: err %.3g", D, G, B, e);
        void *fpb[1] = {blk};
        struct kv_head_view hv2 = {n_src, 0, fpb, NULL};
        struct kv_layer_view view2 = {1, D, 0, G, 0, n_src, &hv2};
        a.out = o2;
        a.kv = &view2;
        be2->ops->attention(be2, &a);
        e = 0;
        for (int i = 0; i < nh * D; i++) e = fmax(e, fabs(o[i] - o2[i]));
        CHECK_MSG(e <= 5e-3, "write-back attention D=%d G=%d B=%d: err %.3g", D, G, B, e);

        // COPY_V: token 4 of grp into slot 0 of grp2, then token 7 into slot 1
        struct kv_qjob cj[2];
        memset(cj, 0, sizeof cj);
        cj[0].kind = cj[1].kind = KV_QJOB_COPY_V;
        cj[0].group = cj[1].group = grp2;
        cj[0].src_group = cj[1].src_group = grp;
        cj[0].t = 0;
        cj[0].t_src = 4;
        cj[1].t = 1;
        cj[1].t_src = 7;
        be1->ops->kv_quant(be1, cj, 2, f);
        const uint32_t *vc2 = (const uint32_t *)(grp2 + kv_q_off_vcode(f));
        const kn_half *vs2 = (const kn_half *)(grp2 + kv_q_off_vscale(f));
        int ok_copy = 1;
        for (int j = 0; j < 2; j++) {
            int ts = j ? 7 : 4;
            for (int d = 0; d < D; d++)
                if (kv_code_get(vc2, (size_t)j * D + d, B) != kv_code_get(vc, (size_t)ts * D + d, B)) ok_copy = 0;
            for (int qq = 0; qq < nvg; qq++)
                if (vs2[j * nvg + qq] != vs[ts * nvg + qq]) ok_copy = 0;
        }
        memcpy(&base, grp2, 4);
        memcpy(&live, grp2 + 4, 4);
        const uint16_t *po2 = (const uint16_t *)(grp2 + kv_q_off_posoff(f));
        CHECK_MSG(ok_copy && base == 508 && live == 3 && po2[0] == 0 && po2[1] == 6, "COPY_V D=%d G=%d B=%d", D, G,
                  B);
        be1->ops->dealloc(be1, blk);
        be1->ops->dealloc(be1, grp);
        be1->ops->dealloc(be1, grp2);
        free(k); free(v); free(k16); free(v16); free(q); free(o); free(o2); free(oref);
    }
}

int main(void) {
    char err[256];
    be1 = kn_cpu_init(1, err, sizeof err);
    be2 = kn_cpu_init(2, err, sizeof err);
    CHECK(be1 && be2);
    if (!be1 || !be2) return test_done();
    kn_cpu_set_int8_act(be1, 0); // the default, fp32 activations: held to 1e-5 of the exact sums;
    kn_cpu_set_int8_act(be2, 0); // check_matmul_int8 turns int8 on for its own calls
    test_memory();
    test_pool();
    test_matmul();
    test_elementwise();
    test_attention();
    test_kv_store_move();
    test_kv_quant();
    struct kn_backend *be0 = kn_cpu_init(0, err, sizeof err);
    CHECK(be0 && kn_cpu_n_threads(be0) >= 1);
    kn_free(be0);
    kn_free(be1);
    kn_free(be2);
    return test_done();
}
