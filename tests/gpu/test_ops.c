// tests/gpu/test_ops.c — every CUDA op against its CPU twin on random inputs (NMSE bounds; byte equality for
// the KV cache writes), plus memory accounting and out-of-memory reporting.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kn.h"
#include "kernels/kn_quant.h"
#include "kvcache/kv_layout.h"
#include "kvcache/kv_quant_math.h"
#include "tests/test.h"

static struct kn_backend *cpu, *gpu;
static double mm_bound = 1e-10; // NMSE bound for matmul (looser when KVCHAT_CUDA_GEMM=f16 or tf32)

// ---- helpers -------------------------------------------------------------------------------------------

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
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
static kn_half rnd_half(float lo, float hi) { return kn_float_to_half(lo + (hi - lo) * (rnd_f() + 1.0f) * 0.5f); }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

// Device copy of host bytes.
static void *gdup(const void *h, size_t n) {
    void *d = gpu->ops->alloc(gpu, n, KN_MEM_SCRATCH);
    CHECK_MSG(d != NULL, "alloc %zu: %s", n, gpu->ops->last_error(gpu));
    if (d && n) CHECK(gpu->ops->upload(gpu, d, h, n) == 0);
    return d;
}
static void *galloc(size_t n) {
    void *d = gpu->ops->alloc(gpu, n, KN_MEM_SCRATCH);
    CHECK_MSG(d != NULL, "alloc %zu: %s", n, gpu->ops->last_error(gpu));
    return d;
}
static void gget(void *h, const void *d, size_t n) {
    int rc = gpu->ops->download(gpu, h, d, n);
    CHECK_MSG(rc == 0, "download: %s", gpu->ops->last_error(gpu));
}
static void gfree(void *d) { gpu->ops->dealloc(gpu, d); }

// Sum of squared differences over the sum of squares of the reference.
static double nmse(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        if (a[i] != a[i]) return INFINITY;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static void check_nmse(const char *what, const float *a, const float *ref, size_t n, double bound) {
    double e = nmse(a, ref, n);
    CHECK_MSG(e <= bound, "%s: NMSE %.3g > %.3g", what, e, bound);
}

// ---- weights -------------------------------------------------------------------------------------------

static const int all_types[] = {KN_F32, KN_F16, KN_BF16, KN_Q4_0, KN_Q4_1, KN_Q5_0,
                                KN_Q5_1, KN_Q8_0, KN_Q4_K, KN_Q5_K, KN_Q6_K};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

// n_rows rows of n_cols random values of `type` (random code bytes, moderate block scales).
static void *make_weights(int type, int64_t n_rows, int64_t n_cols) {
    size_t rb = kn_row_bytes(type, n_cols), n = rb * (size_t)n_rows;
    uint8_t *w = xmalloc(n);
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd_u32();
    size_t bb = kn_type_block_bytes(type), nb = n / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        switch (type) {
        case KN_F32: { float f = rnd_f(); memcpy(p, &f, 4); } break;
        case KN_F16: { kn_half h = kn_float_to_half(rnd_f()); memcpy(p, &h, 2); } break;
        case KN_BF16: { kn_bf16 h = kn_float_to_bf16(rnd_f()); memcpy(p, &h, 2); } break;
        case KN_Q4_0: ((struct kn_block_q4_0 *)p)->d = rnd_half(-0.1f, 0.1f); break;
        case KN_Q4_1: ((struct kn_block_q4_1 *)p)->d = rnd_half(0.0f, 0.1f);
            ((struct kn_block_q4_1 *)p)->m = rnd_half(-0.8f, 0.0f); break;
        case KN_Q5_0: ((struct kn_block_q5_0 *)p)->d = rnd_half(-0.05f, 0.05f); break;
        case KN_Q5_1: ((struct kn_block_q5_1 *)p)->d = rnd_half(0.0f, 0.05f);
            ((struct kn_block_q5_1 *)p)->m = rnd_half(-0.8f, 0.0f); break;
        case KN_Q8_0: ((struct kn_block_q8_0 *)p)->d = rnd_half(-0.01f, 0.01f); break;
        case KN_Q4_K: ((struct kn_block_q4_k *)p)->d = rnd_half(0.0f, 0.002f);
            ((struct kn_block_q4_k *)p)->dmin = rnd_half(0.0f, 0.01f); break;
        case KN_Q5_K: ((struct kn_block_q5_k *)p)->d = rnd_half(0.0f, 0.001f);
            ((struct kn_block_q5_k *)p)->dmin = rnd_half(0.0f, 0.01f); break;
        case KN_Q6_K: ((struct kn_block_q6_k *)p)->d = rnd_half(-0.0005f, 0.0005f); break;
        default: break;
        }
    }
    return w;
}

static int load_tensor(struct kn_backend *be, struct kn_tensor *t, int type, int64_t N, int64_t K, void *data) {
    memset(t, 0, sizeof *t);
    t->type = type;
    t->n_rows = N;
    t->n_cols = K;
    t->nbytes = kn_row_bytes(type, K) * (size_t)N;
    int rc = be->ops->tensor_load(be, t, data);
    CHECK_MSG(rc == 0, "tensor_load %s on %s: %s", kn_type_name(type), be->ops->name, be->ops->last_error(be));
    return rc;
}

static void check_matmul(int type, int64_t N, int64_t K, int n_tok) {
    void *w = make_weights(type, N, K);
    size_t nx = (size_t)n_tok * K, ny = (size_t)n_tok * N;
    float *x = xmalloc(nx * 4), *yc = xmalloc(ny * 4), *yg = xmalloc(ny * 4);
    rnd_fill(x, nx, 1.0f);
    struct kn_tensor tc, tg;
    if (load_tensor(cpu, &tc, type, N, K, w) || load_tensor(gpu, &tg, type, N, K, w)) goto done;
    cpu->ops->matmul(cpu, yc, &tc, x, n_tok);
    float *dx = gdup(x, nx * 4), *dy = galloc(ny * 4);
    gpu->ops->matmul(gpu, dy, &tg, dx, n_tok);
    gget(yg, dy, ny * 4);
    char what[96];
    snprintf(what, sizeof what, "matmul %s N=%lld K=%lld n_tok=%d", kn_type_name(type), (long long)N, (long long)K,
             n_tok);
    check_nmse(what, yg, yc, ny, mm_bound);
    gfree(dx);
    gfree(dy);
    cpu->ops->tensor_unload(cpu, &tc);
    gpu->ops->tensor_unload(gpu, &tg);
done:
    free(w);
    free(x);
    free(yc);
    free(yg);
}

static void test_matmul(void) {
    static const int toks[] = {1, 2, 3, 5, 8, 9, 37, 300};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = all_types[ti];
        int64_t K = kn_type_block_size(type) == KN_QK_K ? 512 : 320;
        for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) check_matmul(type, 67, K, toks[i]);
        check_matmul(type, 1000, 2048, 1);
    }
    // float rows of whole 256-value chunks take the coalesced GEMV (3 chunks: a partial unroll)
    for (int ti = 0; ti < 3; ti++)
        for (int nt = 1; nt <= 8; nt++) check_matmul(all_types[ti], 67, 768, nt);
    // float rows whose length is not a multiple of 32 (llama2.c models: hidden 172)
    check_matmul(KN_F32, 64, 172, 1);
    check_matmul(KN_F32, 172, 64, 37);
    check_matmul(KN_F16, 50, 172, 3);
    check_matmul(KN_BF16, 50, 172, 37);
    // TinyLlama-like shapes
    check_matmul(KN_Q4_K, 2048, 2048, 1);
    check_matmul(KN_Q6_K, 256, 5632, 1);
    check_matmul(KN_Q6_K, 256, 5632, 37);
}

// Decode GEMVs that the backend launches together: q/k/v (three matrices, one input), and gate/up followed by
// glu (one launch with the activation in its epilogue); each result against the CPU.
static void check_fused_gemv(int type, int64_t K, int n_tok, int act) {
    static const int64_t Ns[3] = {67, 33, 20};
    void *w[3];
    struct kn_tensor tc[3], tg[3];
    float *x = xmalloc((size_t)n_tok * K * 4);
    rnd_fill(x, (size_t)n_tok * K, 1.0f);
    float *dx = gdup(x, (size_t)n_tok * K * 4);
    float *yc[3], *yg[3], *dy[3];
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        int64_t N = act >= 0 ? Ns[0] : Ns[i];
        w[i] = make_weights(type, N, K);
        yc[i] = xmalloc((size_t)n_tok * N * 4);
        yg[i] = xmalloc((size_t)n_tok * N * 4);
        dy[i] = galloc((size_t)n_tok * N * 4);
        if (load_tensor(cpu, &tc[i], type, N, K, w[i]) || load_tensor(gpu, &tg[i], type, N, K, w[i])) ok = 0;
    }
    if (ok) {
        int nm = act >= 0 ? 2 : 3;
        for (int i = 0; i < nm; i++) {
            cpu->ops->matmul(cpu, yc[i], &tc[i], x, n_tok);
            gpu->ops->matmul(gpu, dy[i], &tg[i], dx, n_tok);
        }
        if (act >= 0) {
            cpu->ops->glu(cpu, yc[0], yc[0], yc[1], (size_t)n_tok * Ns[0], act);
            gpu->ops->glu(gpu, dy[0], dy[0], dy[1], (size_t)n_tok * Ns[0], act);
        }
        for (int i = 0; i < nm; i++) {
            int64_t N = act >= 0 ? Ns[0] : Ns[i];
            gget(yg[i], dy[i], (size_t)n_tok * N * 4);
            char what[128];
            snprintf(what, sizeof what, "fused %s %s K=%lld n_tok=%d matrix %d", act >= 0 ? "gate/up+glu" : "qkv",
                     kn_type_name(type), (long long)K, n_tok, i);
            check_nmse(what, yg[i], yc[i], (size_t)n_tok * N, mm_bound);
        }
    }
    for (int i = 0; i < 3; i++) {
        cpu->ops->tensor_unload(cpu, &tc[i]);
        gpu->ops->tensor_unload(gpu, &tg[i]);
        gfree(dy[i]);
        free(w[i]);
        free(yc[i]);
        free(yg[i]);
    }
    gfree(dx);
    free(x);
}

static void test_fused_gemv(void) {
    static const int toks[] = {1, 2, 5, 8};
    for (size_t t = 0; t < sizeof toks / sizeof toks[0]; t++) {
        check_fused_gemv(KN_F16, 768, toks[t], -1);
        check_fused_gemv(KN_Q4_K, 512, toks[t], -1);
        check_fused_gemv(KN_F16, 768, toks[t], KN_ACT_SILU);
        check_fused_gemv(KN_Q6_K, 512, toks[t], KN_ACT_GELU_TANH);
    }
    check_fused_gemv(KN_F32, 172, 1, -1);
    check_fused_gemv(KN_F32, 172, 3, KN_ACT_SILU);
    check_fused_gemv(KN_BF16, 320, 1, KN_ACT_SILU);
    check_fused_gemv(KN_Q8_0, 320, 1, -1);
}

static void test_get_rows(void) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = all_types[ti];
        int64_t N = 50, K = kn_type_block_size(type) == KN_QK_K ? 768 : 160;
        if (type == KN_F32) K = 172;
        void *w = make_weights(type, N, K);
        struct kn_tensor tc, tg;
        if (load_tensor(cpu, &tc, type, N, K, w) || load_tensor(gpu, &tg, type, N, K, w)) {
            free(w);
            continue;
        }
        int32_t ids[7] = {0, 49, 3, 3, 17, 25, 1};
        float *yc = xmalloc(7 * K * 4), *yg = xmalloc(7 * K * 4);
        cpu->ops->get_rows(cpu, yc, &tc, ids, 7);
        float *dy = galloc(7 * K * 4);
        gpu->ops->get_rows(gpu, dy, &tg, ids, 7);
        gget(yg, dy, 7 * K * 4);
        char what[64];
        snprintf(what, sizeof what, "get_rows %s", kn_type_name(type));
        check_nmse(what, yg, yc, 7 * K, 1e-12);
        gfree(dy);
        cpu->ops->tensor_unload(cpu, &tc);
        gpu->ops->tensor_unload(gpu, &tg);
        free(w);
        free(yc);
        free(yg);
    }
}

// ---- elementwise ---------------------------------------------------------------------------------------

static void test_elementwise(void) {
    static const int shapes[][2] = {{1, 2048}, {37, 64}, {300, 576}, {5, 8}, {128, 256}, {3, 4097}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int rows = shapes[si][0], dim = shapes[si][1];
        size_t n = (size_t)rows * dim;
        float *x = xmalloc(n * 4), *w = xmalloc((size_t)dim * 4), *yc = xmalloc(n * 4), *yg = xmalloc(n * 4);
        rnd_fill(x, n, 3.0f);
        rnd_fill(w, (size_t)dim, 1.5f);
        struct kn_tensor tc, tg;
        load_tensor(cpu, &tc, KN_F32, 1, dim, w);
        load_tensor(gpu, &tg, KN_F32, 1, dim, w);
        cpu->ops->rmsnorm(cpu, yc, x, &tc, rows, dim, 1e-6f);
        float *dx = gdup(x, n * 4), *dy = galloc(n * 4);
        gpu->ops->rmsnorm(gpu, dy, dx, &tg, rows, dim, 1e-6f);
        gget(yg, dy, n * 4);
        check_nmse("rmsnorm", yg, yc, n, 1e-12);
        gpu->ops->rmsnorm(gpu, dx, dx, &tg, rows, dim, 1e-6f); // in place
        gget(yg, dx, n * 4);
        check_nmse("rmsnorm in place", yg, yc, n, 1e-12);
        // glu (both activations), add, scale
        float *g = xmalloc(n * 4), *u = xmalloc(n * 4);
        rnd_fill(g, n, 6.0f);
        rnd_fill(u, n, 2.0f);
        float *dg = gdup(g, n * 4), *du = gdup(u, n * 4);
        for (int act = 0; act < 2; act++) {
            cpu->ops->glu(cpu, yc, g, u, n, act);
            gpu->ops->glu(gpu, dy, dg, du, n, act);
            gget(yg, dy, n * 4);
            check_nmse(act ? "glu gelu" : "glu silu", yg, yc, n, 1e-12);
        }
        gpu->ops->glu(gpu, dg, dg, du, n, KN_ACT_SILU); // y aliases gate
        gget(yg, dg, n * 4);
        cpu->ops->glu(cpu, yc, g, u, n, KN_ACT_SILU);
        check_nmse("glu in place", yg, yc, n, 1e-12);
        memcpy(yc, x, n * 4);
        cpu->ops->add(cpu, yc, u, n);
        cpu->ops->scale(cpu, yc, 0.37f, n);
        CHECK(gpu->ops->upload(gpu, dy, x, n * 4) == 0);
        gpu->ops->add(gpu, dy, du, n);
        gpu->ops->scale(gpu, dy, 0.37f, n);
        gget(yg, dy, n * 4);
        CHECK_MSG(memcmp(yg, yc, n * 4) == 0, "add/scale differ (rows %d dim %d)", rows, dim);
        gfree(dx);
        gfree(dy);
        gfree(dg);
        gfree(du);
        cpu->ops->tensor_unload(cpu, &tc);
        gpu->ops->tensor_unload(gpu, &tg);
        free(x); free(w); free(yc); free(yg); free(g); free(u);
    }
}

static void test_rope(void) {
    static const int cfg[][4] = {{1, 32, 64, 64}, {37, 4, 64, 64}, {300, 8, 8, 8}, {5, 4, 256, 256}, {7, 3, 128, 32}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int n_tok = cfg[ci][0], nh = cfg[ci][1], hd = cfg[ci][2], nrot = cfg[ci][3];
        size_t n = (size_t)n_tok * nh * hd;
        float *x = xmalloc(n * 4), *yc = xmalloc(n * 4), *yg = xmalloc(n * 4);
        int32_t *pos = xmalloc((size_t)n_tok * 4);
        for (int mode = 0; mode <= 2; mode += 2) {
            for (int big = 0; big < 2; big++) {
                rnd_fill(x, n, 2.0f);
                for (int t = 0; t < n_tok; t++) pos[t] = big ? 30000 + 3 * t : t;
                float base = big ? 1000000.0f : 10000.0f, fscale = big ? 0.25f : 1.0f;
                memcpy(yc, x, n * 4);
                cpu->ops->rope(cpu, yc, pos, n_tok, nh, hd, nrot, base, fscale, mode);
                float *dx = gdup(x, n * 4);
                gpu->ops->rope(gpu, dx, pos, n_tok, nh, hd, nrot, base, fscale, mode);
                gget(yg, dx, n * 4);
                char what[96];
                snprintf(what, sizeof what, "rope %s n_tok=%d heads=%d hd=%d n_rot=%d big=%d", mode ? "neox" : "norm",
                         n_tok, nh, hd, nrot, big);
                check_nmse(what, yg, yc, n, 1e-13);
                gfree(dx);
            }
        }
        free(x); free(yc); free(yg); free(pos);
    }
}

// Sequences the backend fuses: add then rmsnorm of the sum (residual stream), rope of queries then keys with the
// same positions; and near misses that must not fuse.
static void test_fused_elementwise(void) {
    static const int shapes[][2] = {{1, 2048}, {5, 64}, {300, 576}, {2, 4096}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int rows = shapes[si][0], dim = shapes[si][1];
        size_t n = (size_t)rows * dim;
        float *x = xmalloc(n * 4), *r = xmalloc(n * 4), *w = xmalloc((size_t)dim * 4);
        float *xc = xmalloc(n * 4), *yc = xmalloc(n * 4), *xg = xmalloc(n * 4), *yg = xmalloc(n * 4);
        rnd_fill(x, n, 3.0f);
        rnd_fill(r, n, 2.0f);
        rnd_fill(w, (size_t)dim, 1.5f);
        struct kn_tensor tc, tg;
        load_tensor(cpu, &tc, KN_F32, 1, dim, w);
        load_tensor(gpu, &tg, KN_F32, 1, dim, w);
        for (int variant = 0; variant < 3; variant++) { // y = the residual (model), y = x, y elsewhere
            memcpy(xc, x, n * 4);
            memcpy(yc, r, n * 4);
            cpu->ops->add(cpu, xc, yc, n);
            float *dx = gdup(x, n * 4), *dr = gdup(r, n * 4), *dy = galloc(n * 4);
            gpu->ops->add(gpu, dx, dr, n);
            float *gy = variant == 0 ? dr : variant == 1 ? dx : dy;
            float *cy = variant == 1 ? xc : yc;
            cpu->ops->rmsnorm(cpu, cy, xc, &tc, rows, dim, 1e-5f);
            gpu->ops->rmsnorm(gpu, gy, dx, &tg, rows, dim, 1e-5f);
            gget(yg, gy, n * 4);
            char what[96];
            snprintf(what, sizeof what, "add+rmsnorm rows %d dim %d variant %d", rows, dim, variant);
            check_nmse(what, yg, cy, n, 1e-12);
            if (variant != 1) {
                gget(xg, dx, n * 4);
                CHECK_MSG(memcmp(xg, xc, n * 4) == 0, "%s: the sum differs", what);
            }
            gfree(dx);
            gfree(dr);
            gfree(dy);
        }
        // an add whose sum is normalised with another row count, and an rmsnorm of another tensor: no fusion
        memcpy(xc, x, n * 4);
        cpu->ops->add(cpu, xc, r, n);
        cpu->ops->rmsnorm(cpu, yc, r, &tc, rows, dim, 1e-5f);
        float *dx = gdup(x, n * 4), *dr = gdup(r, n * 4), *dy = galloc(n * 4);
        gpu->ops->add(gpu, dx, dr, n);
        gpu->ops->rmsnorm(gpu, dy, dr, &tg, rows, dim, 1e-5f);
        gget(yg, dy, n * 4);
        gget(xg, dx, n * 4);
        check_nmse("add then rmsnorm of another tensor", yg, yc, n, 1e-12);
        CHECK(memcmp(xg, xc, n * 4) == 0);
        if (rows > 1) {
            memcpy(xc, x, n * 4);
            cpu->ops->add(cpu, xc, r, n);
            cpu->ops->rmsnorm(cpu, yc, xc, &tc, 1, dim, 1e-5f);
            CHECK(gpu->ops->upload(gpu, dx, x, n * 4) == 0);
            gpu->ops->add(gpu, dx, dr, n);
            gpu->ops->rmsnorm(gpu, dy, dx, &tg, 1, dim, 1e-5f); // first row only
            gget(yg, dy, (size_t)dim * 4);
            gget(xg, dx, n * 4);
            check_nmse("add then rmsnorm of one row", yg, yc, (size_t)dim, 1e-12);
            CHECK(memcmp(xg, xc, n * 4) == 0);
        }
        gfree(dx);
        gfree(dr);
        gfree(dy);
        cpu->ops->tensor_unload(cpu, &tc);
        gpu->ops->tensor_unload(gpu, &tg);
        free(x); free(r); free(w); free(xc); free(yc); free(xg); free(yg);
    }
    // rope: queries then keys (fused), then keys at other positions (not fused)
    static const int cfg[][4] = {{1, 32, 4, 64}, {3, 8, 8, 8}, {8, 4, 1, 256}, {2, 32, 32, 128}};
    for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
        int n_tok = cfg[ci][0], hq = cfg[ci][1], hk = cfg[ci][2], hd = cfg[ci][3];
        for (int mode = 0; mode <= 2; mode += 2) {
            for (int same = 0; same < 2; same++) {
                size_t nq = (size_t)n_tok * hq * hd, nk = (size_t)n_tok * hk * hd;
                float *q = xmalloc(nq * 4), *k = xmalloc(nk * 4), *qc = xmalloc(nq * 4), *kc = xmalloc(nk * 4);
                float *qg = xmalloc(nq * 4), *kg = xmalloc(nk * 4);
                int32_t pq[8], pk[8];
                for (int t = 0; t < n_tok; t++) {
                    pq[t] = 1000 + 7 * t;
                    pk[t] = same ? pq[t] : 5 + t;
                }
                rnd_fill(q, nq, 2.0f);
                rnd_fill(k, nk, 2.0f);
                memcpy(qc, q, nq * 4);
                memcpy(kc, k, nk * 4);
                cpu->ops->rope(cpu, qc, pq, n_tok, hq, hd, hd, 10000.0f, 1.0f, mode);
                cpu->ops->rope(cpu, kc, pk, n_tok, hk, hd, hd, 10000.0f, 1.0f, mode);
                float *dq = gdup(q, nq * 4), *dk = gdup(k, nk * 4);
                gpu->ops->rope(gpu, dq, pq, n_tok, hq, hd, hd, 10000.0f, 1.0f, mode);
                gpu->ops->rope(gpu, dk, pk, n_tok, hk, hd, hd, 10000.0f, 1.0f, mode);
                gget(qg, dq, nq * 4);
                gget(kg, dk, nk * 4);
                char what[96];
                snprintf(what, sizeof what, "rope q+k n_tok=%d heads %d/%d hd=%d mode %d same %d", n_tok, hq, hk, hd,
                         mode, same);
                check_nmse(what, qg, qc, nq, 1e-13);
                check_nmse(what, kg, kc, nk, 1e-13);
                gfree(dq);
                gfree(dk);
                free(q); free(k); free(qc); free(kc); free(qg); free(kg);
            }
        }
    }
}

static void test_argmax(void) {
    static const int sizes[] = {1, 31, 512, 32000, 262144};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int n = sizes[i];
        float *x = xmalloc((size_t)n * 4);
        rnd_fill(x, (size_t)n, 10.0f);
        if (n > 100) {
            x[n / 3] = 20.0f; // a tie: the first one wins
            x[n / 2] = 20.0f;
        }
        float *dx = gdup(x, (size_t)n * 4);
        int a = cpu->ops->argmax(cpu, x, n), b = gpu->ops->argmax(gpu, dx, n);
        CHECK_MSG(a == b, "argmax n=%d: cpu %d gpu %d", n, a, b);
        gfree(dx);
        free(x);
    }
}

// ---- KV cache ------------------------------------------------------------------------------------------

// Twin caches: the same bytes in CPU (host) and GPU memory.
struct twin_head {
    int n_fp, n_q;
    void **fpc, **fpg, **qc, **qg;
};
struct twin {
    int H, D, bits, G;
    struct kv_qfmt f;
    struct twin_head *h;
    struct kv_head_view *hvc, *hvg;
    struct kv_layer_view vc, vg;
};

static void twin_block(size_t nb, const void *bytes, void **c, void **g) {
    *c = cpu->ops->alloc(cpu, nb, KN_MEM_KV);
    memcpy(*c, bytes, nb);
    *g = gpu->ops->alloc(gpu, nb, KN_MEM_KV);
    CHECK(*g != NULL && gpu->ops->upload(gpu, *g, bytes, nb) == 0);
}

// Per KV head: n_q packed groups (positions pos0 + 2t: evicted tokens between) then n_fp fp slots in shuffled
// slot order; `dead` kills random packed slots.
static void twin_build(struct twin *T, int H, int D, int bits, int G, int n_fp, int n_q, int window, int32_t pos0,
                       int dead) {
    memset(T, 0, sizeof *T);
    T->H = H;
    T->D = D;
    T->bits = bits;
    T->G = G;
    T->f = kv_qfmt_make(D, G, bits ? bits : 2);
    T->h = calloc((size_t)H, sizeof *T->h);
    T->hvc = calloc((size_t)H, sizeof *T->hvc);
    T->hvg = calloc((size_t)H, sizeof *T->hvg);
    size_t qbytes = kv_q_block_bytes(T->f), fbytes = kv_fp_block_bytes(D);
    uint8_t *buf = xmalloc(qbytes > fbytes ? qbytes : fbytes);
    for (int h = 0; h < H; h++) {
        struct twin_head *th = &T->h[h];
        th->n_q = bits ? n_q : 0;
        th->n_fp = n_fp;
        int nfb = (n_fp + 31) / 32;
        th->qc = calloc((size_t)th->n_q + 1, sizeof(void *));
        th->qg = calloc((size_t)th->n_q + 1, sizeof(void *));
        th->fpc = calloc((size_t)nfb + 1, sizeof(void *));
        th->fpg = calloc((size_t)nfb + 1, sizeof(void *));
        int32_t p = pos0;
        for (int g = 0; g < th->n_q; g++) {
            for (size_t i = 0; i < qbytes; i++) buf[i] = (uint8_t)rnd_u32();
            uint32_t live = G == 32 ? 0xffffffffu : ((1u << G) - 1);
            if (dead) live &= rnd_u32() | 1u;
            memcpy(buf, &p, 4);
            memcpy(buf + 4, &live, 4);
            uint16_t *po = (uint16_t *)(buf + kv_q_off_posoff(T->f));
            for (int t = 0; t < G; t++) po[t] = (uint16_t)(2 * t);
            p += 2 * G;
            kn_half *ks = (kn_half *)(buf + kv_q_off_kscale(T->f)), *kz = (kn_half *)(buf + kv_q_off_kzero(T->f));
            for (int d = 0; d < D; d++) {
                ks[d] = rnd_half(0.0f, 0.3f);
                kz[d] = rnd_half(-0.5f, 0.0f);
            }
            size_t nvg = kv_q_n_vgroups(T->f);
            kn_half *vs = (kn_half *)(buf + kv_q_off_vscale(T->f)), *vz = (kn_half *)(buf + kv_q_off_vzero(T->f));
            for (size_t i = 0; i < nvg; i++) {
                vs[i] = rnd_half(0.0f, 0.3f);
                vz[i] = rnd_half(-0.5f, 0.0f);
            }
            twin_block(qbytes, buf, &th->qc[g], &th->qg[g]);
        }
        // fp slots: positions p .. p + n_fp - 1 in shuffled order
        int32_t *perm = xmalloc(((size_t)nfb * 32 + 1) * 4);
        for (int s = 0; s < nfb * 32; s++) perm[s] = s < n_fp ? p + s : -7;
        for (int s = n_fp - 1; s > 0; s--) {
            int r = (int)(rnd_u32() % (uint32_t)(s + 1));
            int32_t tmp = perm[s];
            perm[s] = perm[r];
            perm[r] = tmp;
        }
        for (int b = 0; b < nfb; b++) {
            for (size_t i = 0; i < fbytes; i++) buf[i] = (uint8_t)rnd_u32();
            kn_half *k = (kn_half *)(buf + kv_fp_off_k(D)), *v = (kn_half *)(buf + kv_fp_off_v(D));
            for (int i = 0; i < 32 * D; i++) {
                k[i] = kn_float_to_half(rnd_f());
                v[i] = kn_float_to_half(rnd_f());
            }
            memcpy(buf, perm + 32 * b, 32 * 4);
            twin_block(fbytes, buf, &th->fpc[b], &th->fpg[b]);
        }
        free(perm);
        T->hvc[h].n_fp = T->hvg[h].n_fp = n_fp;
        T->hvc[h].n_q = T->hvg[h].n_q = th->n_q;
        T->hvc[h].fp_blocks = th->fpc;
        T->hvg[h].fp_blocks = th->fpg;
        T->hvc[h].q_blocks = th->qc;
        T->hvg[h].q_blocks = th->qg;
    }
    free(buf);
    struct kv_layer_view v = {H, D, bits, G, window, (bits ? n_q * G : 0) + n_fp, NULL};
    T->vc = v;
    T->vg = v;
    T->vc.heads = T->hvc;
    T->vg.heads = T->hvg;
}

static void twin_free(struct twin *T) {
    for (int h = 0; h < T->H; h++) {
        struct twin_head *th = &T->h[h];
        for (int g = 0; g < th->n_q; g++) {
            cpu->ops->dealloc(cpu, th->qc[g]);
            gpu->ops->dealloc(gpu, th->qg[g]);
        }
        for (int b = 0; b < (th->n_fp + 31) / 32; b++) {
            cpu->ops->dealloc(cpu, th->fpc[b]);
            gpu->ops->dealloc(gpu, th->fpg[b]);
        }
        free(th->qc); free(th->qg); free(th->fpc); free(th->fpg);
    }
    free(T->h); free(T->hvc); free(T->hvg);
}

static void check_attn(const char *what, struct twin *T, int n_head, int n_tok, const int32_t *qpos, int want_probs) {
    const int D = T->D;
    size_t nq = (size_t)n_tok * n_head * D;
    float *q = xmalloc(nq * 4), *oc = xmalloc(nq * 4), *og = xmalloc(nq * 4);
    rnd_fill(q, nq, 2.0f);
    int stride = T->vc.max_slots + 5;
    size_t np = (size_t)n_head * n_tok * stride;
    float *pc = want_probs ? xmalloc(np * 4) : NULL, *pg = want_probs ? xmalloc(np * 4) : NULL;
    struct kn_attn_args a = {oc, q, qpos, n_tok, n_head, 1.0f / sqrtf((float)D), &T->vc, pc, stride};
    cpu->ops->attention(cpu, &a);
    float *dq = gdup(q, nq * 4), *dout = galloc(nq * 4), *dp = want_probs ? galloc(np * 4) : NULL;
    if (dp) { // stale garbage: the kernel must write every probability
        for (size_t i = 0; i < np; i++) pg[i] = 123.0f;
        CHECK(gpu->ops->upload(gpu, dp, pg, np * 4) == 0);
    }
    struct kn_attn_args b = {dout, dq, qpos, n_tok, n_head, 1.0f / sqrtf((float)D), &T->vg, dp, stride};
    gpu->ops->attention(gpu, &b);
    gget(og, dout, nq * 4);
    CHECK_MSG(gpu->ops->last_error(gpu)[0] == 0, "%s: %s", what, gpu->ops->last_error(gpu));
    char w2[160];
    snprintf(w2, sizeof w2, "attention %s", what);
    check_nmse(w2, og, oc, nq, 1e-9);
    if (want_probs) {
        gget(pg, dp, np * 4);
        double worst = 0;
        for (size_t i = 0; i < np; i++) worst = fmax(worst, fabs((double)pg[i] - pc[i]));
        CHECK_MSG(worst <= 2e-6, "attention %s: probs differ by %.3g", what, worst);
        snprintf(w2, sizeof w2, "attention %s probs", what);
        check_nmse(w2, pg, pc, np, 1e-9);
    }
    gfree(dq);
    gfree(dout);
    if (dp) gfree(dp);
    free(q); free(oc); free(og); free(pc); free(pg);
}

static void test_attention(void) {
    struct twin T;
    int32_t *qp = xmalloc(20000 * 4);
    // decode over fp-only caches: GQA 32/4 (TinyLlama), MQA 4/1 head_dim 256 (Gemma 3 270M), head_dim 8, odd dims
    twin_build(&T, 4, 64, 0, 32, 1000, 0, 0, 0, 0);
    qp[0] = 5000;
    check_attn("GQA 32/4 D=64 decode", &T, 32, 1, qp, 1);
    check_attn("GQA 32/4 D=64 decode no probs", &T, 32, 1, qp, 0);
    for (int i = 0; i < 37; i++) qp[i] = 963 + i;
    check_attn("GQA 32/4 D=64 37 causal", &T, 32, 37, qp, 1);
    twin_free(&T);
    twin_build(&T, 1, 256, 0, 32, 777, 0, 512, 0, 0);
    qp[0] = 776;
    check_attn("MQA 4/1 D=256 window 512", &T, 4, 1, qp, 1);
    for (int i = 0; i < 37; i++) qp[i] = 740 + i;
    check_attn("MQA 4/1 D=256 window 512 37", &T, 4, 37, qp, 0);
    twin_free(&T);
    static const int dims[] = {8, 13, 7, 128, 32, 96};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        char what[64];
        twin_build(&T, 4, dims[di], 0, 32, 45, 0, 0, 0, 0);
        qp[0] = 1000;
        snprintf(what, sizeof what, "fp-only 8/4 D=%d", dims[di]);
        check_attn(what, &T, 8, 1, qp, 1);
        snprintf(what, sizeof what, "fp-only MHA D=%d", dims[di]);
        check_attn(what, &T, 4, 3, qp, 0);
        twin_free(&T);
    }
    // prefill: causal inside a batch whose tokens are all in the cache (shuffled slots)
    twin_build(&T, 4, 64, 0, 32, 300, 0, 0, 0, 0);
    for (int i = 0; i < 300; i++) qp[i] = i;
    check_attn("prefill 300 causal GQA 32/4", &T, 32, 300, qp, 0);
    check_attn("prefill 300 causal probs GQA 8/4", &T, 8, 300, qp, 1);
    twin_free(&T);
    // long decode (many splits)
    twin_build(&T, 4, 128, 0, 32, 8192, 0, 0, 0, 0);
    qp[0] = 9000;
    check_attn("long fp 8192 GQA 32/4 D=128", &T, 32, 1, qp, 1);
    check_attn("long fp 8192 GQA 32/4 D=128 no probs", &T, 32, 1, qp, 0);
    check_attn("long fp 8192 GQA 16/4 D=128 no probs", &T, 16, 1, qp, 0);
    check_attn("long fp 8192 MHA D=128 2 tokens", &T, 4, 2, qp, 0);
    T.hvc[1].n_fp = T.hvg[1].n_fp = 77; // heads of different lengths
    T.hvc[3].n_fp = T.hvg[3].n_fp = 0;
    check_attn("long fp GQA 32/4 D=128 uneven heads", &T, 32, 1, qp, 1);
    check_attn("long fp GQA 32/4 D=128 uneven heads no probs", &T, 32, 1, qp, 0);
    T.hvc[1].n_fp = T.hvg[1].n_fp = T.hvc[3].n_fp = T.hvg[3].n_fp = 8192;
    twin_free(&T);
    // Llama-2-7B shape: 32 KV heads, head_dim 128, one query row per head
    twin_build(&T, 32, 128, 0, 32, 1024, 0, 0, 0, 0);
    qp[0] = 1100;
    check_attn("MHA 32/32 D=128 1k decode", &T, 32, 1, qp, 0);
    check_attn("MHA 32/32 D=128 1k decode probs", &T, 32, 1, qp, 1);
    for (int i = 0; i < 8; i++) qp[i] = 1016 + i;
    check_attn("MHA 32/32 D=128 8 causal", &T, 32, 8, qp, 0);
    twin_free(&T);
    // TinyLlama shape at 1k: 4 KV heads x 8 query heads, head_dim 64
    twin_build(&T, 4, 64, 0, 32, 1024, 0, 0, 0, 0);
    qp[0] = 1023;
    check_attn("GQA 32/4 D=64 1k decode", &T, 32, 1, qp, 0);
    qp[0] = 500; // half the cache is in the future
    check_attn("GQA 32/4 D=64 1k decode pos 500", &T, 32, 1, qp, 1);
    twin_free(&T);
    // packed, one query row per KV head (head_dim 128) and GQA with 2 and 4 bits
    static const int mbits[] = {2, 4, 1, 8};
    for (int bi = 0; bi < 4; bi++) {
        char what[96];
        twin_build(&T, 4, 128, mbits[bi], 32, 40, 30, 0, 0, 1);
        qp[0] = 100000;
        snprintf(what, sizeof what, "packed MHA B=%d D=128", mbits[bi]);
        check_attn(what, &T, 4, 1, qp, 0);
        // 8-bit codes make keys up to ~75 here: logits near +-50 put the probabilities' rounding above the 2e-6
        // bound for any summation order, so B=8 checks the outputs only
        if (mbits[bi] < 8) check_attn(what, &T, 4, 1, qp, 1);
        snprintf(what, sizeof what, "packed GQA 32/4 B=%d D=128", mbits[bi]);
        check_attn(what, &T, 32, 1, qp, 0);
        twin_free(&T);
    }
    // packed only and mixed, 2 and 4 bits, dead slots
    static const int bitsv[] = {2, 4};
    static const int groups[] = {32, 16, 8};
    static const int pdims[] = {64, 8, 128, 256, 13};
    for (int bi = 0; bi < 2; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (size_t di = 0; di < sizeof pdims / sizeof pdims[0]; di++) {
                int G = groups[gi], D = pdims[di];
                if (D % (G < D ? G : D)) continue;
                char what[96];
                twin_build(&T, 2, D, bitsv[bi], G, 0, 5, 0, 0, 1);
                qp[0] = 100000;
                snprintf(what, sizeof what, "packed-only B=%d G=%d D=%d", bitsv[bi], G, D);
                check_attn(what, &T, 8, 1, qp, 1);
                twin_free(&T);
                twin_build(&T, 2, D, bitsv[bi], G, 37, 7, 0, 5, 1);
                qp[0] = 100000;
                qp[1] = 5 + 2 * G * 3 + 20; // sees some groups
                qp[2] = 5 + 3;              // part of the first group only
                snprintf(what, sizeof what, "mixed B=%d G=%d D=%d", bitsv[bi], G, D);
                check_attn(what, &T, 8, 3, qp, 1);
                check_attn(what, &T, 2, 3, qp, 0);
                twin_free(&T);
            }
    // mixed with a sliding window, GQA 32/4
    twin_build(&T, 4, 64, 4, 32, 150, 20, 200, 0, 1);
    for (int i = 0; i < 5; i++) qp[i] = 700 + 60 * i;
    check_attn("mixed 4-bit sliding window GQA 32/4", &T, 32, 5, qp, 1);
    twin_free(&T);
    twin_build(&T, 1, 256, 2, 32, 128, 40, 512, 0, 1);
    qp[0] = 2600;
    check_attn("mixed 2-bit MQA 4/1 D=256 window", &T, 4, 1, qp, 1);
    twin_free(&T);
    // long packed decode
    twin_build(&T, 4, 64, 2, 32, 128, 500, 0, 0, 0);
    qp[0] = 40000;
    check_attn("long packed 2-bit 500 groups GQA 32/4", &T, 32, 1, qp, 1);
    check_attn("long packed 2-bit 500 groups GQA 32/4 no probs", &T, 32, 1, qp, 0);
    T.hvc[0].n_q = T.hvg[0].n_q = 3; // heads of different lengths
    T.hvc[2].n_fp = T.hvg[2].n_fp = 1;
    check_attn("long packed 2-bit uneven heads", &T, 32, 1, qp, 0);
    check_attn("long packed 2-bit uneven heads probs", &T, 32, 1, qp, 1);
    T.hvc[0].n_q = T.hvg[0].n_q = 500;
    T.hvc[2].n_fp = T.hvg[2].n_fp = 128;
    twin_free(&T);
    twin_build(&T, 4, 64, 4, 32, 128, 300, 0, 0, 1);
    qp[0] = 40000;
    check_attn("long packed 4-bit 300 groups dead slots GQA 32/4", &T, 32, 1, qp, 0);
    twin_free(&T);
    // nothing visible, empty
    twin_build(&T, 1, 16, 2, 32, 10, 1, 0, 500, 0);
    qp[0] = 3;
    check_attn("nothing visible", &T, 2, 1, qp, 1);
    twin_free(&T);
    twin_build(&T, 1, 16, 0, 32, 0, 0, 0, 0, 0);
    qp[0] = 3;
    check_attn("empty", &T, 2, 1, qp, 1);
    twin_free(&T);
    free(qp);
}

// Byte comparison of every block of two twin heads' fp and packed storage.
static void check_twin_bytes(const char *what, struct twin *T, int n_groups_extra, void **gc, void **gg) {
    size_t fb = kv_fp_block_bytes(T->D), qb = kv_q_block_bytes(T->f);
    uint8_t *a = xmalloc(fb > qb ? fb : qb);
    int bad = 0;
    for (int h = 0; h < T->H; h++) {
        for (int b = 0; b < (T->h[h].n_fp + 31) / 32; b++) {
            gget(a, T->h[h].fpg[b], fb);
            if (memcmp(a, T->h[h].fpc[b], fb)) bad++;
        }
    }
    for (int g = 0; g < n_groups_extra; g++) {
        gget(a, gg[g], qb);
        if (memcmp(a, gc[g], qb)) {
            bad++;
            for (size_t i = 0; i < qb; i++)
                if (a[i] != ((uint8_t *)gc[g])[i]) {
                    fprintf(stderr, "  %s: group %d differs first at byte %zu (gpu %02x cpu %02x)\n", what, g, i, a[i],
                            ((uint8_t *)gc[g])[i]);
                    break;
                }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d blocks differ", what, bad);
    free(a);
}

static void test_kv_store_move(void) {
    struct twin T;
    const int D = 64, H = 4, n_tok = 37;
    twin_build(&T, H, D, 0, 32, 96, 0, 0, 0, 0);
    struct kv_slot *sc = xmalloc((size_t)n_tok * H * sizeof *sc), *sg = xmalloc((size_t)n_tok * H * sizeof *sg);
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < H; h++) {
            int s = (t * 7 + 3) % 96; // distinct slots per head
            sc[t * H + h].block = T.h[h].fpc[s / 32];
            sg[t * H + h].block = T.h[h].fpg[s / 32];
            sc[t * H + h].slot = sg[t * H + h].slot = s % 32;
        }
    size_t n = (size_t)n_tok * H * D;
    float *k = xmalloc(n * 4), *v = xmalloc(n * 4);
    rnd_fill(k, n, 4.0f);
    rnd_fill(v, n, 4.0f);
    k[0] = 1e-6f; // an fp16 subnormal
    v[1] = 70000.0f; // overflows to inf
    int32_t pos[37];
    for (int t = 0; t < n_tok; t++) pos[t] = 5000 + t;
    cpu->ops->kv_store(cpu, sc, k, v, pos, n_tok, H, D);
    float *dk = gdup(k, n * 4), *dv = gdup(v, n * 4);
    gpu->ops->kv_store(gpu, sg, dk, dv, pos, n_tok, H, D);
    check_twin_bytes("kv_store", &T, 0, NULL, NULL);
    // moves in order: a later move reads an earlier destination, within and across blocks
    const int nm = 40;
    struct kv_slot *mc_s = xmalloc(nm * sizeof *mc_s), *mc_d = xmalloc(nm * sizeof *mc_d);
    struct kv_slot *mg_s = xmalloc(nm * sizeof *mg_s), *mg_d = xmalloc(nm * sizeof *mg_d);
    for (int h = 0; h < H; h++) {
        for (int i = 0; i < nm; i++) {
            int s = (i * 5 + h) % 96, d = i % 3 == 2 ? ((i - 1) * 5 + h) % 96 : (i * 11 + 40) % 96;
            if (i % 3 == 2) { // read what the previous move wrote
                s = ((i - 1) * 11 + 40) % 96;
                d = (i * 13 + 7) % 96;
            }
            mc_s[i].block = T.h[h].fpc[s / 32];
            mg_s[i].block = T.h[h].fpg[s / 32];
            mc_d[i].block = T.h[h].fpc[d / 32];
            mg_d[i].block = T.h[h].fpg[d / 32];
            mc_s[i].slot = mg_s[i].slot = s % 32;
            mc_d[i].slot = mg_d[i].slot = d % 32;
        }
        cpu->ops->kv_move(cpu, mc_s, mc_d, nm, D);
        gpu->ops->kv_move(gpu, mg_s, mg_d, nm, D);
    }
    check_twin_bytes("kv_move", &T, 0, NULL, NULL);
    gfree(dk);
    gfree(dv);
    free(sc); free(sg); free(k); free(v); free(mc_s); free(mc_d); free(mg_s); free(mg_d);
    twin_free(&T);
}

// KIVI jobs as the cache issues them (values one by one, a copy into a hole, keys of a partial and of a full
// group), interleaved with queued memsets, small uploads and moves; byte equality with the CPU.
static void check_kv_quant(int D, int G, int B) {
    struct twin T;
    twin_build(&T, 2, D, 0, G, 64, 0, 0, 0, 0);
    T.f = kv_qfmt_make(D, G, B);
    const struct kv_qfmt f = T.f;
    const size_t qb = kv_q_block_bytes(f);
    void *gc[4], *gg[4];
    uint8_t *junk = xmalloc(qb);
    for (int g = 0; g < 4; g++) {
        for (size_t i = 0; i < qb; i++) junk[i] = (uint8_t)rnd_u32();
        twin_block(qb, junk, &gc[g], &gg[g]);
        memset(gc[g], 0, qb);                 // the cache zeroes a new group (memset0)
        gpu->ops->memset0(gpu, gg[g], qb);    // queued
    }
    free(junk);
    struct kv_slot srcc[KV_MAX_GROUP], srcg[KV_MAX_GROUP];
    for (int g = 0; g < 4; g++) {
        int h = g / 2;
        int n = g % 2 ? G : (G > 3 ? G - 3 : 1); // a partial and a full group
        for (int t = 0; t < n; t++) {
            int s = (g % 2) * 32 + t;
            srcc[t].block = T.h[h].fpc[s / 32];
            srcg[t].block = T.h[h].fpg[s / 32];
            srcc[t].slot = srcg[t].slot = s % 32;
            struct kv_qjob jc = {KV_QJOB_VALUE, gc[g], t, 1, &srcc[t], NULL, 0};
            struct kv_qjob jg = {KV_QJOB_VALUE, gg[g], t, 1, &srcg[t], NULL, 0};
            cpu->ops->kv_quant(cpu, &jc, 1, f);
            gpu->ops->kv_quant(gpu, &jg, 1, f);
        }
        if (n > 2) { // evict slot 1: the last queued token moves into the hole, its live bit is dropped
            struct kv_qjob jc = {KV_QJOB_COPY_V, gc[g], 1, 0, NULL, gc[g], n - 1};
            struct kv_qjob jg = {KV_QJOB_COPY_V, gg[g], 1, 0, NULL, gg[g], n - 1};
            cpu->ops->kv_quant(cpu, &jc, 1, f);
            gpu->ops->kv_quant(gpu, &jg, 1, f);
            uint32_t live;
            memcpy(&live, (uint8_t *)gc[g] + 4, 4);
            live &= ~(1u << (n - 1));
            memcpy((uint8_t *)gc[g] + 4, &live, 4);
            CHECK(gpu->ops->upload(gpu, (uint8_t *)gg[g] + 4, &live, 4) == 0); // queued
            srcc[1] = srcc[n - 1];
            srcg[1] = srcg[n - 1];
            n--;
        }
        struct kv_qjob jc = {KV_QJOB_KEYS, gc[g], 0, n, srcc, NULL, 0};
        struct kv_qjob jg = {KV_QJOB_KEYS, gg[g], 0, n, srcg, NULL, 0};
        cpu->ops->kv_quant(cpu, &jc, 1, f);
        gpu->ops->kv_quant(gpu, &jg, 1, f);
    }
    // a move after the jobs reads written-back values
    struct kv_slot ms_c = {T.h[0].fpc[0], 0}, md_c = {T.h[1].fpc[1], 31};
    struct kv_slot ms_g = {T.h[0].fpg[0], 0}, md_g = {T.h[1].fpg[1], 31};
    cpu->ops->kv_move(cpu, &ms_c, &md_c, 1, D);
    gpu->ops->kv_move(gpu, &ms_g, &md_g, 1, D);
    char what[64];
    snprintf(what, sizeof what, "kv_quant D=%d G=%d B=%d", D, G, B);
    check_twin_bytes(what, &T, 4, gc, gg);
    CHECK_MSG(gpu->ops->last_error(gpu)[0] == 0, "%s: %s", what, gpu->ops->last_error(gpu));
    for (int g = 0; g < 4; g++) {
        cpu->ops->dealloc(cpu, gc[g]);
        gpu->ops->dealloc(gpu, gg[g]);
    }
    twin_free(&T);
}

static void test_kv_quant(void) {
    static const int cfg[][3] = {{64, 32, 2}, {64, 32, 4}, {8, 32, 2}, {13, 32, 4}, {13, 32, 2},
                                 {256, 32, 2}, {128, 16, 2}, {128, 16, 4}, {64, 8, 4}, {32, 32, 1}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) check_kv_quant(cfg[i][0], cfg[i][1], cfg[i][2]);
}

// ---- memory ------------------------------------------------------------------------------------------------

static void test_memory(void) {
    struct kn_mem m0, m1, m2;
    gpu->ops->mem_info(gpu, &m0);
    CHECK(m0.dev_total > 0 && m0.dev_used > 0 && m0.dev_used <= m0.dev_total);
    void *p = gpu->ops->alloc(gpu, 48u << 20, KN_MEM_KV);
    CHECK(p != NULL);
    gpu->ops->mem_info(gpu, &m1);
    CHECK_EQ_INT(m1.ours[KN_MEM_KV] - m0.ours[KN_MEM_KV], 48u << 20);
    CHECK(m1.dev_used >= m0.dev_used + (40u << 20));
    CHECK(m1.ours_peak >= m1.ours[KN_MEM_KV] + m1.ours[KN_MEM_WEIGHTS] + m1.ours[KN_MEM_SCRATCH]);
    gpu->ops->dealloc(gpu, p);
    gpu->ops->mem_info(gpu, &m2);
    CHECK_EQ_INT(m2.ours[KN_MEM_KV], m0.ours[KN_MEM_KV]);
    CHECK(m2.dev_used + (40u << 20) <= m1.dev_used);
    // out of memory: NULL and a clear message; the backend keeps working
    void *huge = gpu->ops->alloc(gpu, (size_t)1 << 50, KN_MEM_KV);
    CHECK(huge == NULL);
    CHECK_MSG(strstr(gpu->ops->last_error(gpu), "CUDA out of memory allocating") != NULL, "message: %s",
              gpu->ops->last_error(gpu));
    float x[4] = {1, 2, 3, 4}, y[4];
    float *d = gdup(x, sizeof x);
    gpu->ops->scale(gpu, d, 2.0f, 4);
    gget(y, d, sizeof y);
    CHECK(y[3] == 8.0f);
    gfree(d);
    CHECK(gpu->ops->sync(gpu) == 0);
    // a queued memset and small upload are ordered with a following download
    uint8_t z[64], h[64];
    for (int i = 0; i < 64; i++) z[i] = (uint8_t)(i + 1);
    uint8_t *dz = gdup(z, 64);
    gpu->ops->memset0(gpu, dz, 64);
    CHECK(gpu->ops->upload(gpu, dz + 8, z, 4) == 0);
    gget(h, dz, 64);
    CHECK(h[0] == 0 && h[8] == 1 && h[11] == 4 && h[12] == 0 && h[63] == 0);
    gfree(dz);
}

// KVCHAT_TEST_OPS_ONLY=attention,rope (a comma-separated list of group names) runs only those groups.
static int want(const char *group) {
    const char *only = getenv("KVCHAT_TEST_OPS_ONLY");
    if (!only || !only[0]) return 1;
    size_t n = strlen(group);
    for (const char *p = only; (p = strstr(p, group)) != NULL; p += n)
        if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

int main(void) {
    char err[512];
    int n_dev = kn_cuda_device_count();
    if (n_dev <= 0) {
        struct kn_backend *be = kn_cuda_init(0, err, sizeof err);
        CHECK(be == NULL && err[0]);
        TEST_SKIP("no CUDA device (%s)", err);
        return test_done();
    }
    const char *mode = getenv("KVCHAT_CUDA_GEMM");
    if (mode && (!strcmp(mode, "f16") || !strcmp(mode, "tf32"))) mm_bound = 1e-5;
    cpu = kn_cpu_init(0, err, sizeof err);
    gpu = kn_cuda_init(0, err, sizeof err);
    if (!cpu || !gpu) {
        fprintf(stderr, "backend init failed: %s\n", err);
        CHECK(0);
        return test_done();
    }
    struct kn_backend *bad = kn_cuda_init(n_dev + 3, err, sizeof err);
    CHECK(bad == NULL && strstr(err, "does not exist"));
    if (want("elementwise")) test_elementwise();
    if (want("fused")) test_fused_elementwise();
    if (want("rope")) test_rope();
    if (want("argmax")) test_argmax();
    if (want("get_rows")) test_get_rows();
    if (want("matmul")) test_matmul();
    if (want("fused")) test_fused_gemv();
    if (want("kv")) test_kv_store_move();
    if (want("kv")) test_kv_quant();
    if (want("attention")) test_attention();
    if (want("memory")) test_memory(); // last: its out-of-memory case leaves last_error set
    struct kn_mem m;
    gpu->ops->mem_info(gpu, &m);
    CHECK_MSG(m.ours[KN_MEM_WEIGHTS] == 0 && m.ours[KN_MEM_KV] == 0, "leaked: weights %llu kv %llu",
              (unsigned long long)m.ours[KN_MEM_WEIGHTS], (unsigned long long)m.ours[KN_MEM_KV]);
    kn_free(gpu);
    kn_free(cpu);
    return test_done();
}
