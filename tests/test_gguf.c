// tests/test_gguf.c — GGUF reader/writer round trips, a corpus of malformed files, the synthetic model generator.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kn_quant.h"
#include "kernels/kn_types.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "tests/test.h"

#define SP_TEST_PIECE "\xe2\x96\x81the"

static char tmpdir[512];

static const char *tmp_path(const char *name) {
    static char buf[4][700];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

// ---- raw byte builder (independent of the writer) ----------------------------------------------------------

struct rb {
    uint8_t *p;
    size_t n, cap;
};

static void rb_bytes(struct rb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void rb_le(struct rb *b, uint64_t v, int nbytes) {
    uint8_t t[8];
    for (int i = 0; i < nbytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    rb_bytes(b, t, (size_t)nbytes);
}
static void rb_u32(struct rb *b, uint32_t v) { rb_le(b, v, 4); }
static void rb_u64(struct rb *b, uint64_t v) { rb_le(b, v, 8); }
static void rb_str(struct rb *b, const char *s) {
    rb_u64(b, strlen(s));
    rb_bytes(b, s, strlen(s));
}
static void rb_pad(struct rb *b, size_t a) {
    while (b->n % a) rb_le(b, 0, 1);
}

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

// Mutations of the small hand-built file, each with the text its error must contain.
enum mut {
    M_NONE, M_VERSION1, M_VERSION99, M_BIGENDIAN, M_NT_HUGE, M_NKV_HUGE, M_KEYLEN_HUGE, M_STRLEN_HUGE,
    M_ARRCOUNT_HUGE, M_BAD_VTYPE, M_BAD_ELEM_TYPE, M_NEST_DEEP, M_NDIMS0, M_NDIMS5, M_NE0, M_TYPE10, M_TYPE99,
    M_DUP_NAME, M_DUP_KEY, M_OFF_PAST, M_OFF_MISALIGNED, M_NOT_BLOCK_MULT, M_ELEMS_OVERFLOW, M_ALIGN3, M_ALIGN0,
    M_ALIGN_STR, M_EMPTY_KEY, M_NUL_KEY, M_EMPTY_NAME, M_ALIGN64, M_BAD_MAGIC, M_COUNT
};

static const char *const mut_expect[M_COUNT] = {
    [M_VERSION1] = "unsupported GGUF version 1",
    [M_VERSION99] = "unsupported GGUF version 99",
    [M_BIGENDIAN] = "big-endian",
    [M_NT_HUGE] = "tensor count",
    [M_NKV_HUGE] = "metadata count",
    [M_KEYLEN_HUGE] = "runs past end of file",
    [M_STRLEN_HUGE] = "runs past end of file",
    [M_ARRCOUNT_HUGE] = "does not fit in the file",
    [M_BAD_VTYPE] = "invalid value type 13",
    [M_BAD_ELEM_TYPE] = "invalid element type 77",
    [M_NEST_DEEP] = "nested",
    [M_NDIMS0] = "has 0 dimensions",
    [M_NDIMS5] = "has 5 dimensions",
    [M_NE0] = "invalid size 0",
    [M_TYPE10] = "tensor 'a' has unsupported type 10 (Q2_K)",
    [M_TYPE99] = "unsupported type 99",
    [M_DUP_NAME] = "duplicate tensor name 'a'",
    [M_DUP_KEY] = "duplicate metadata key",
    [M_OFF_PAST] = "runs past end of file",
    [M_OFF_MISALIGNED] = "not aligned",
    [M_NOT_BLOCK_MULT] = "not a multiple",
    [M_ELEMS_OVERFLOW] = "too many elements",
    [M_ALIGN3] = "general.alignment",
    [M_ALIGN0] = "general.alignment",
    [M_ALIGN_STR] = "general.alignment",
    [M_EMPTY_KEY] = "empty key",
    [M_NUL_KEY] = "NUL",
    [M_EMPTY_NAME] = "empty name",
    [M_BAD_MAGIC] = "not a GGUF file (bad magic)",
};

// A small valid file: five metadata entries (string, u32 alignment, u16 array, string array, nested array)
// and two tensors, "a" (F32 [8]) and "b" (Q8_0 [32, 2]); the file ends exactly where b's data ends.
static void build_small(struct rb *b, int m) {
    b->n = 0;
    uint32_t align = m == M_ALIGN64 ? 64 : m == M_ALIGN3 ? 3 : m == M_ALIGN0 ? 0 : 32;
    rb_bytes(b, m == M_BAD_MAGIC ? "GGUV" : "GGUF", 4);
    rb_u32(b, m == M_VERSION1 ? 1 : m == M_VERSION99 ? 99 : m == M_BIGENDIAN ? 0x03000000u : 3);
    rb_u64(b, m == M_NT_HUGE ? (1ull << 60) : 2);
    rb_u64(b, m == M_NKV_HUGE ? (1ull << 58) : 5);
    // 1: string
    if (m == M_KEYLEN_HUGE) rb_u64(b, 1ull << 62);
    else rb_str(b, m == M_EMPTY_KEY ? "" : "general.architecture");
    rb_u32(b, m == M_BAD_VTYPE ? 13 : 8);
    if (m == M_STRLEN_HUGE) rb_u64(b, UINT64_MAX - 3);
    else rb_str(b, "llama");
    // 2: alignment
    if (m == M_NUL_KEY) {
        rb_u64(b, 17);
        rb_bytes(b, "general.align\0ent", 17);
    } else {
        rb_str(b, m == M_DUP_KEY ? "general.architecture" : "general.alignment");
    }
    if (m == M_ALIGN_STR) {
        rb_u32(b, 8);
        rb_str(b, "32");
    } else {
        rb_u32(b, 4);
        rb_u32(b, align);
    }
    // 3: array of u16
    rb_str(b, "test.u16s");
    rb_u32(b, 9);
    rb_u32(b, m == M_BAD_ELEM_TYPE ? 77 : 2);
    rb_u64(b, m == M_ARRCOUNT_HUGE ? (1ull << 61) : 3);
    rb_le(b, 1, 2), rb_le(b, 2, 2), rb_le(b, 65535, 2);
    // 4: array of strings
    rb_str(b, "test.strs");
    rb_u32(b, 9);
    rb_u32(b, 8);
    rb_u64(b, 3);
    rb_str(b, "a"), rb_str(b, "bc"), rb_str(b, "");
    // 5: array of arrays of i8 ([[1, 2], [3]]), or arrays nested 5 deep
    rb_str(b, "test.nested");
    rb_u32(b, 9);
    if (m == M_NEST_DEEP) {
        for (int k = 0; k < 5; k++) rb_u32(b, 9), rb_u64(b, 1);
        rb_u32(b, 1), rb_u64(b, 0);
    } else {
        rb_u32(b, 9);
        rb_u64(b, 2);
        rb_u32(b, 1), rb_u64(b, 2), rb_le(b, 1, 1), rb_le(b, 2, 1);
        rb_u32(b, 1), rb_u64(b, 1), rb_le(b, 3, 1);
    }
    // tensor infos
    rb_str(b, m == M_EMPTY_NAME ? "" : "a");
    rb_u32(b, m == M_NDIMS0 ? 0 : m == M_NDIMS5 ? 5 : 1);
    if (m == M_NDIMS5)
        for (int k = 0; k < 4; k++) rb_u64(b, 1);
    if (m != M_NDIMS0) rb_u64(b, m == M_NE0 ? 0 : 8);
    rb_u32(b, m == M_TYPE10 ? 10 : m == M_TYPE99 ? 99 : 0);
    rb_u64(b, m == M_OFF_MISALIGNED ? 16 : 0);
    rb_str(b, m == M_DUP_NAME ? "a" : "b");
    if (m == M_ELEMS_OVERFLOW) {
        rb_u32(b, 4);
        for (int k = 0; k < 4; k++) rb_u64(b, 1ull << 20); // 2^80 elements
    } else {
        rb_u32(b, 2);
        rb_u64(b, m == M_NOT_BLOCK_MULT ? 48 : 32);
        rb_u64(b, 2);
    }
    rb_u32(b, 8);
    uint64_t boff = m == M_ALIGN64 ? 64 : 32;
    rb_u64(b, m == M_OFF_PAST ? 4096 : boff);
    rb_pad(b, align >= 1 && !(align & (align - 1)) ? align : 32);
    // data: a = 0.5 * i; b = two Q8_0 blocks with d = 1.0 and q = i - 16
    for (int i = 0; i < 8; i++) {
        float v = 0.5f * (float)i;
        uint32_t bits;
        memcpy(&bits, &v, 4);
        rb_u32(b, bits);
    }
    if (m == M_ALIGN64) rb_pad(b, 64);
    for (int blk = 0; blk < 2; blk++) {
        rb_le(b, 0x3c00, 2);
        for (int i = 0; i < 32; i++) rb_le(b, (uint8_t)(int8_t)(i - 16), 1);
    }
}

// err names the file first and is one line.
static int err_ok(const char *err, const char *base) {
    size_t n = strlen(base);
    return err[0] && !strncmp(err, base, n) && err[n] == ':' && !strchr(err, '\n');
}

static void test_small_valid(void) {
    struct rb b = {0};
    char err[256];
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("small.gguf"));
    for (int m = 0; m < 2; m++) {
        build_small(&b, m == 0 ? M_NONE : M_ALIGN64);
        write_file(p, b.p, b.n);
        struct gguf *g = gguf_open(p, err, sizeof err);
        CHECK_MSG(g != NULL, "%s", err);
        if (!g) continue;
        CHECK_EQ_INT(gguf_version(g), 3);
        CHECK_EQ_INT(gguf_file_size(g), b.n);
        CHECK_EQ_INT(gguf_n_kv(g), 5);
        CHECK_EQ_INT(gguf_n_tensors(g), 2);
        const char *s;
        size_t len;
        CHECK(gguf_get_str(g, "general.architecture", &s, &len) == 0 && len == 5 && !memcmp(s, "llama", 5));
        uint32_t u;
        CHECK(gguf_get_u32(g, "general.alignment", &u) == 0 && u == (m ? 64u : 32u));
        int et;
        uint64_t n;
        const void *data;
        CHECK(gguf_get_arr(g, "test.u16s", &et, &n, &data) == 0 && et == GGUF_T_UINT16 && n == 3);
        const uint8_t *d8 = data;
        CHECK(d8 && d8[4] == 0xff && d8[5] == 0xff && d8[2] == 2);
        CHECK(gguf_get_arr(g, "test.strs", &et, &n, &data) == 0 && et == GGUF_T_STRING && n == 3 && !data);
        CHECK(gguf_get_arr_str(g, "test.strs", 1, &s, &len) == 0 && len == 2 && !memcmp(s, "bc", 2));
        CHECK(gguf_get_arr_str(g, "test.strs", 2, &s, &len) == 0 && len == 0);
        CHECK_EQ_INT(gguf_get_arr_str(g, "test.strs", 3, &s, &len), -2);
        CHECK_EQ_INT(gguf_get_arr_str(g, "test.u16s", 0, &s, &len), -2);
        CHECK(gguf_get_arr(g, "test.nested", &et, &n, &data) == 0 && et == GGUF_T_ARRAY && n == 2 && !data);
        CHECK_EQ_INT(gguf_kv_type(g, 4), GGUF_T_ARRAY);
        CHECK(!strcmp(gguf_kv_key(g, 2), "test.u16s"));
        CHECK(gguf_kv_key(g, 5) == NULL && gguf_kv_key(g, -1) == NULL);
        const struct gguf_tensor_info *ta = gguf_find_tensor(g, "a"), *tb = gguf_find_tensor(g, "b");
        CHECK(ta && tb && gguf_tensor(g, 0) == ta && gguf_tensor(g, 1) == tb && !gguf_tensor(g, 2));
        CHECK(!gguf_find_tensor(g, "c"));
        if (ta && tb) {
            CHECK(ta->type == KN_F32 && ta->n_dims == 1 && ta->ne[0] == 8 && ta->ne[1] == 1 && ta->nbytes == 32);
            CHECK(tb->type == KN_Q8_0 && tb->n_dims == 2 && tb->ne[0] == 32 && tb->ne[1] == 2 && tb->nbytes == 68);
            float y[64];
            kn_dequant_row(KN_F32, ta->data, y, 8);
            CHECK(y[0] == 0.0f && y[7] == 3.5f);
            kn_dequant_row(KN_Q8_0, tb->data, y, 64);
            CHECK(y[0] == -16.0f && y[63] == 15.0f);
            CHECK((const uint8_t *)tb->data + tb->nbytes == (const uint8_t *)ta->data - ta->offset + tb->offset + tb->nbytes);
            CHECK_EQ_INT(((const uint8_t *)tb->data - (const uint8_t *)ta->data) % (m ? 64 : 32), 0);
        }
        gguf_close(g);
    }
    free(b.p);
}

static void test_malformed(void) {
    struct rb b = {0};
    char err[256];
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("bad.gguf"));
    // Missing file, empty file, a directory.
    struct gguf *g = gguf_open(tmp_path("does-not-exist.gguf"), err, sizeof err);
    CHECK(!g && strstr(err, "does-not-exist.gguf: cannot open (No such file or directory)"));
    write_file(p, "", 0);
    g = gguf_open(p, err, sizeof err);
    CHECK_MSG(!g && err_ok(err, "bad.gguf") && strstr(err, "empty"), "%s", err);
    g = gguf_open(tmpdir, err, sizeof err);
    CHECK_MSG(!g && err[0] && !strchr(err, '\n'), "%s", err);
    write_file(p, "GGU", 3);
    g = gguf_open(p, err, sizeof err);
    CHECK_MSG(!g && err_ok(err, "bad.gguf"), "%s", err);
    // Each mutation.
    for (int m = M_VERSION1; m < M_COUNT; m++) {
        if (m == M_ALIGN64) continue;
        build_small(&b, m);
        write_file(p, b.p, b.n);
        err[0] = 0;
        g = gguf_open(p, err, sizeof err);
        CHECK_MSG(!g && err_ok(err, "bad.gguf") && strstr(err, mut_expect[m]), "mutation %d: got '%s', want '%s'", m,
                  err, mut_expect[m]);
        gguf_close(g);
    }
    // Every proper prefix of the valid file fails (it ends exactly at the last tensor's data).
    build_small(&b, M_NONE);
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        write_file(p, b.p, n);
        err[0] = 0;
        g = gguf_open(p, err, sizeof err);
        if (g || !err_ok(err, "bad.gguf")) {
            bad++;
            fprintf(stderr, "prefix %zu: %s\n", n, g ? "opened" : err);
        }
        gguf_close(g);
    }
    CHECK_EQ_INT(bad, 0);
    write_file(p, b.p, b.n);
    g = gguf_open(p, err, sizeof err);
    CHECK(g != NULL);
    gguf_close(g);
    // Random corruption never crashes: either a clean error or a file whose every tensor byte is readable.
    uint64_t s = 42;
    int opened = 0, failed_ok = 0, n_fuzz = 3000;
    struct rb c = {0};
    for (int it = 0; it < n_fuzz; it++) {
        c.n = 0;
        rb_bytes(&c, b.p, b.n);
        int flips = 1 + (int)(s % 4);
        for (int k = 0; k < flips; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(s >> 33) % c.n;
            c.p[at] ^= (uint8_t)(1u << ((s >> 20) & 7));
            if ((s >> 40) % 5 == 0) c.p[at] = 0xff;
        }
        size_t len = (s >> 50) % 7 == 0 ? (size_t)(s >> 13) % c.n : c.n;
        write_file(p, c.p, len);
        err[0] = 0;
        g = gguf_open(p, err, sizeof err);
        if (g) {
            opened++;
            unsigned sum = 0;
            for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
                const struct gguf_tensor_info *t = gguf_tensor(g, i);
                for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
            }
            for (int64_t i = 0; i < gguf_n_kv(g); i++) {
                const char *key = gguf_kv_key(g, i), *sv;
                size_t sl;
                uint64_t n;
                int et;
                const void *d;
                if (gguf_get_arr(g, key, &et, &n, &d) == 0 && et == GGUF_T_STRING)
                    for (uint64_t k = 0; k < n; k++)
                        if (gguf_get_arr_str(g, key, k, &sv, &sl) == 0 && sl) sum += (uint8_t)sv[sl - 1];
            }
            (void)sum;
            gguf_close(g);
        } else {
            failed_ok += err_ok(err, "bad.gguf");
        }
    }
    CHECK_EQ_INT(opened + failed_ok, n_fuzz);
    printf("fuzz: %d of %d corrupted files still opened, the rest failed cleanly\n", opened, n_fuzz);
    free(b.p);
    free(c.p);
}

// ---- writer round trip -------------------------------------------------------------------------------------

static const int all_types[] = {KN_F32, KN_F16, KN_BF16, KN_Q4_0, KN_Q4_1, KN_Q5_0,
                                KN_Q5_1, KN_Q8_0, KN_Q4_K, KN_Q5_K, KN_Q6_K};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))

struct gen_ctx {
    int64_t n;
};
static void gen_fill(void *ctx, int64_t row, float *dst) {
    const struct gen_ctx *c = ctx;
    for (int64_t i = 0; i < c->n; i++) dst[i] = (float)((row * 31 + i * 7) % 23) * 0.01f - 0.1f;
}

static void test_writer_roundtrip(void) {
    char err[256];
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("rt.gguf"));
    struct gguf_writer *w = gguf_writer_init();
    gguf_w_u32(w, "k.u32", 4000000000u);
    gguf_w_i32(w, "k.i32", -5);
    gguf_w_i32(w, "k.i32pos", 77);
    gguf_w_f32(w, "k.f32", 1.5f);
    gguf_w_bool(w, "k.bool", 1);
    gguf_w_bool(w, "k.false", 0);
    gguf_w_str(w, "k.str", "h\xc3\xa9llo");
    const char *strs[] = {"", SP_TEST_PIECE, "x"};
    gguf_w_arr_str(w, "k.strs", strs, 3);
    float fv[4] = {1.0f, -2.5f, 3.25f, 1e-3f};
    gguf_w_arr_f32(w, "k.f32s", fv, 4);
    int32_t iv[3] = {-1, 0, 2147483647};
    gguf_w_arr_i32(w, "k.i32s", iv, 3);
    gguf_w_arr_i32(w, "k.empty", iv, 0);

    enum { COLS = 256, ROWS = 3 };
    float vals[COLS * ROWS];
    uint64_t s = 3;
    for (int i = 0; i < COLS * ROWS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        vals[i] = (float)((int)(s >> 40) % 2001 - 1000) * 1e-3f;
    }
    char name[64];
    for (int k = 0; k < N_TYPES; k++) {
        snprintf(name, sizeof name, "t.%s", kn_type_name(all_types[k]));
        int64_t ne[2] = {COLS, ROWS};
        CHECK_EQ_INT(gguf_w_tensor_f32(w, name, all_types[k], 2, ne, vals), 0);
    }
    int64_t ne4[4] = {32, 2, 3, 2};
    float v4[32 * 12];
    for (int i = 0; i < 32 * 12; i++) v4[i] = (float)i;
    CHECK_EQ_INT(gguf_w_tensor_f32(w, "t.4d", KN_F32, 4, ne4, v4), 0);
    uint8_t raw[34];
    memset(raw, 0, sizeof raw);
    raw[1] = 0x3c, raw[2] = 5;
    int64_t ne1[1] = {32};
    CHECK_EQ_INT(gguf_w_tensor_raw(w, "t.raw", KN_Q8_0, 1, ne1, raw, 34), 0);
    CHECK_EQ_INT(gguf_w_tensor_raw(w, "t.raw2", KN_Q8_0, 1, ne1, raw, 33), -1); // wrong size
    struct gen_ctx gc = {COLS};
    int64_t ne3[3] = {COLS, 2, 2};
    CHECK_EQ_INT(gguf_w_tensor_gen(w, "t.gen", KN_Q4_K, 3, ne3, gen_fill, &gc), 0);
    // Rejected tensors.
    int64_t ne_bad[2] = {48, 1};
    CHECK_EQ_INT(gguf_w_tensor_f32(w, "t.F32", KN_F32, 1, ne1, vals), -1);        // duplicate name
    CHECK_EQ_INT(gguf_w_tensor_f32(w, "t.q2k", 10, 1, ne1, vals), -1);            // unsupported type
    CHECK_EQ_INT(gguf_w_tensor_f32(w, "t.mis", KN_Q8_0, 2, ne_bad, vals), -1);    // 48 % 32
    CHECK_EQ_INT(gguf_w_tensor_f32(w, "t.nd", KN_F32, 5, ne4, vals), -1);         // 5 dims
    CHECK_EQ_INT(gguf_writer_save(w, p, err, sizeof err), 0);
    CHECK_EQ_INT(gguf_writer_save(w, tmp_path("no/such/dir/x.gguf"), err, sizeof err), -1);
    CHECK_MSG(strstr(err, "cannot create"), "%s", err);
    gguf_writer_free(w);

    struct gguf *g = gguf_open(p, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    if (!g) return;
    uint32_t u;
    int64_t i64;
    float f;
    int bv;
    const char *sv;
    size_t sl;
    CHECK(gguf_get_u32(g, "k.u32", &u) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(g, "k.u32", &i64) == 0 && i64 == 4000000000ll);
    CHECK(gguf_get_i64(g, "k.i32", &i64) == 0 && i64 == -5);
    CHECK_EQ_INT(gguf_get_u32(g, "k.i32", &u), -2); // negative does not fit
    CHECK(gguf_get_u32(g, "k.i32pos", &u) == 0 && u == 77);
    CHECK(gguf_get_f32(g, "k.f32", &f) == 0 && f == 1.5f);
    CHECK_EQ_INT(gguf_get_f32(g, "k.u32", &f), -2);
    CHECK_EQ_INT(gguf_get_u32(g, "k.f32", &u), -2);
    CHECK_EQ_INT(gguf_get_u32(g, "k.bool", &u), -2); // bool is not an integer
    CHECK(gguf_get_bool(g, "k.bool", &bv) == 0 && bv == 1);
    CHECK(gguf_get_bool(g, "k.false", &bv) == 0 && bv == 0);
    CHECK_EQ_INT(gguf_get_bool(g, "k.u32", &bv), -2);
    CHECK(gguf_get_str(g, "k.str", &sv, &sl) == 0 && sl == 6 && !memcmp(sv, "h\xc3\xa9llo", 6));
    CHECK_EQ_INT(gguf_get_str(g, "k.u32", &sv, &sl), -2);
    CHECK_EQ_INT(gguf_get_str(g, "missing", &sv, &sl), -1);
    CHECK_EQ_INT(gguf_get_u32(g, "missing", &u), -1);
    int et;
    uint64_t n;
    const void *d;
    CHECK(gguf_get_arr(g, "k.strs", &et, &n, &d) == 0 && et == GGUF_T_STRING && n == 3);
    for (int k = 0; k < 3; k++)
        CHECK(gguf_get_arr_str(g, "k.strs", (uint64_t)k, &sv, &sl) == 0 && sl == strlen(strs[k]) &&
              !memcmp(sv, strs[k], sl));
    CHECK(gguf_get_arr(g, "k.f32s", &et, &n, &d) == 0 && et == GGUF_T_FLOAT32 && n == 4);
    float fr[4];
    memcpy(fr, d, sizeof fr);
    CHECK(!memcmp(fr, fv, sizeof fv));
    CHECK(gguf_get_arr(g, "k.i32s", &et, &n, &d) == 0 && et == GGUF_T_INT32 && n == 3);
    int32_t ir[3];
    memcpy(ir, d, sizeof ir);
    CHECK(!memcmp(ir, iv, sizeof iv));
    CHECK(gguf_get_arr(g, "k.empty", &et, &n, &d) == 0 && n == 0);
    CHECK_EQ_INT(gguf_get_arr(g, "k.u32", &et, &n, &d), -2);
    CHECK_EQ_INT(gguf_n_kv(g), 11);
    CHECK(!strcmp(gguf_kv_key(g, 0), "k.u32") && gguf_kv_type(g, 0) == GGUF_T_UINT32);
    CHECK(!strcmp(gguf_kv_key(g, 10), "k.empty") && gguf_kv_type(g, 10) == GGUF_T_ARRAY);

    CHECK_EQ_INT(gguf_n_tensors(g), N_TYPES + 3);
    uint8_t *want = malloc(COLS * ROWS * 4);
    float *y = malloc(COLS * ROWS * sizeof *y);
    for (int k = 0; k < N_TYPES; k++) {
        snprintf(name, sizeof name, "t.%s", kn_type_name(all_types[k]));
        const struct gguf_tensor_info *t = gguf_find_tensor(g, name);
        CHECK_MSG(t != NULL, "%s", name);
        if (!t) continue;
        size_t rb = kn_row_bytes(all_types[k], COLS);
        CHECK(t->type == all_types[k] && t->n_dims == 2 && t->ne[0] == COLS && t->ne[1] == ROWS);
        CHECK_EQ_INT(t->nbytes, rb * ROWS);
        CHECK_EQ_INT(t->offset % 32, 0);
        for (int r = 0; r < ROWS; r++) kn_quantize_row(all_types[k], vals + r * COLS, want + r * rb, COLS);
        CHECK_MSG(!memcmp(t->data, want, t->nbytes), "%s bytes differ", name);
        kn_dequant_row(t->type, t->data, y, COLS * ROWS);
        double maxe = 0;
        for (int i = 0; i < COLS * ROWS; i++) maxe = fmax(maxe, fabs((double)y[i] - vals[i]));
        CHECK_MSG(maxe < 0.15, "%s: max err %g", name, maxe);
    }
    const struct gguf_tensor_info *t4 = gguf_find_tensor(g, "t.4d");
    CHECK(t4 && t4->n_dims == 4 && t4->ne[0] == 32 && t4->ne[1] == 2 && t4->ne[2] == 3 && t4->ne[3] == 2 &&
          t4->nbytes == 32 * 12 * 4 && !memcmp(t4->data, v4, t4->nbytes));
    const struct gguf_tensor_info *tr = gguf_find_tensor(g, "t.raw");
    CHECK(tr && tr->nbytes == 34 && !memcmp(tr->data, raw, 34));
    CHECK(gguf_find_tensor(g, "t.raw2") == NULL);
    const struct gguf_tensor_info *tg = gguf_find_tensor(g, "t.gen");
    CHECK(tg && tg->n_dims == 3 && tg->ne[2] == 2 && tg->type == KN_Q4_K);
    if (tg) {
        float rowv[COLS];
        size_t rb = kn_row_bytes(KN_Q4_K, COLS);
        int same = 1;
        for (int r = 0; r < 4; r++) {
            gen_fill(&gc, r, rowv);
            kn_quantize_row(KN_Q4_K, rowv, want, COLS);
            same &= !memcmp((const uint8_t *)tg->data + r * rb, want, rb);
        }
        CHECK(same);
    }
    // Prefixes: everything short of the last tensor's data fails; the trailing alignment padding is optional.
    const struct gguf_tensor_info *last = gguf_tensor(g, gguf_n_tensors(g) - 1);
    size_t full = gguf_file_size(g);
    size_t data_end = full - (32 - last->nbytes % 32) % 32;
    gguf_close(g);
    int bad = 0;
    for (size_t len = full; len-- > 0;) {
        if (truncate(p, (off_t)len) != 0) {
            bad++;
            break;
        }
        err[0] = 0;
        g = gguf_open(p, err, sizeof err);
        if ((g != NULL) != (len >= data_end) || (!g && !err_ok(err, "rt.gguf"))) {
            if (bad++ < 5) fprintf(stderr, "prefix %zu of %zu: %s\n", len, full, g ? "opened" : err);
        }
        gguf_close(g);
    }
    CHECK_EQ_INT(bad, 0);
    free(want);
    free(y);
}

// ---- big string arrays --------------------------------------------------------------------------------------

static void test_big_vocab(void) {
    enum { NV = 262144 };
    char err[256];
    char *arena = malloc((size_t)NV * 16);
    const char **v = malloc(NV * sizeof *v);
    for (int i = 0; i < NV; i++) {
        snprintf(arena + (size_t)i * 16, 16, "tok%d", i % 1000000);
        v[i] = arena + (size_t)i * 16;
    }
    struct gguf_writer *w = gguf_writer_init();
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", v, NV);
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("vocab.gguf"));
    CHECK_EQ_INT(gguf_writer_save(w, p, err, sizeof err), 0);
    gguf_writer_free(w);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct gguf *g = gguf_open(p, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    int bad = 0;
    uint64_t s = 9;
    for (int k = 0; g && k < 1000000; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int i = (int)((s >> 33) % NV);
        const char *sv;
        size_t sl;
        if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &sv, &sl) || sl != strlen(v[i]) ||
            memcmp(sv, v[i], sl))
            bad++;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK_EQ_INT(bad, 0);
    double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    printf("262144-string vocabulary: open + 1M random lookups in %.3f s\n", dt);
    CHECK(dt < 5.0); // O(1) access; a linear scan per lookup would take minutes
    gguf_close(g);
    free(arena);
    free(v);
}

// ---- synthetic models ---------------------------------------------------------------------------------------

static int tensor_type(const struct gguf *g, const char *name) {
    const struct gguf_tensor_info *t = gguf_find_tensor(g, name);
    return t ? t->type : -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void check_vocab(const struct gguf *g, int n_vocab) {
    uint64_t n;
    int et;
    const void *d;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &d) == 0 && et == GGUF_T_STRING && n == (uint64_t)n_vocab);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &d) == 0 && et == GGUF_T_FLOAT32 && n == (uint64_t)n_vocab);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &d) == 0 && et == GGUF_T_INT32 &&
          n == (uint64_t)n_vocab);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    memcpy(types, d, (size_t)n_vocab * sizeof *types);
    const char *s;
    size_t len;
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &s, &len) == 0 && len == 5 && !memcmp(s, "<unk>", 5));
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 2, &s, &len) == 0 && len == 4 && !memcmp(s, "</s>", 4));
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3 + 0x41, &s, &len) == 0 && len == 6 && !memcmp(s, "<0x41>", 6));
    CHECK(types[0] == 2 && types[1] == 3 && types[2] == 3 && types[3] == 6 && types[258] == 6 && types[259] == 1);
    CHECK(types[n_vocab - 1] == 1);
    // Pieces are unique: sort copies and compare neighbours.
    char **pieces = malloc((size_t)n_vocab * sizeof *pieces);
    for (int i = 0; i < n_vocab; i++) {
        gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s, &len);
        pieces[i] = malloc(len + 1);
        memcpy(pieces[i], s, len);
        pieces[i][len] = 0;
    }
    int dups = 0;
    qsort(pieces, (size_t)n_vocab, sizeof *pieces, cmp_str);
    for (int i = 1; i < n_vocab; i++) dups += !strcmp(pieces[i - 1], pieces[i]);
    CHECK_EQ_INT(dups, 0);
    for (int i = 0; i < n_vocab; i++) free(pieces[i]);
    free(pieces);
    free(types);
    uint32_t u;
    CHECK(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u) == 0 && u == 1);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u) == 0 && u == 2);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &u) == 0 && u == 0);
    CHECK(gguf_get_str(g, "tokenizer.ggml.model", &s, &len) == 0 && len == 5 && !memcmp(s, "llama", 5));
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

static void check_shape(const struct gguf *g, const char *name, int type, int64_t ne0, int64_t ne1) {
    const struct gguf_tensor_info *t = gguf_find_tensor(g, name);
    CHECK_MSG(t != NULL, "missing %s", name);
    if (!t) return;
    CHECK_MSG(t->ne[0] == ne0 && t->ne[1] == ne1 && t->n_dims == (ne1 > 1 ? 2 : 1), "%s: [%lld, %lld]", name,
              (long long)t->ne[0], (long long)t->ne[1]);
    if (type >= 0) CHECK_MSG(t->type == type, "%s: type %s, want %s", name, kn_type_name(t->type), kn_type_name(type));
}

static void test_synth_llama(void) {
    struct synth_spec s;
    char err[256];
    CHECK_EQ_INT(synth_preset(&s, "nope"), -1);
    CHECK_EQ_INT(synth_preset(&s, "tiny"), 0);
    s.q4_k_m = 1;
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("tiny.gguf"));
    CHECK_MSG(synth_write_gguf(&s, p, err, sizeof err) == 0, "%s", err);
    struct gguf *g = gguf_open(p, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    if (!g) return;
    CHECK_EQ_INT(gguf_n_tensors(g), 3 + 9 * 2);
    const char *sv;
    size_t sl;
    uint32_t u;
    float f;
    int bv;
    CHECK(gguf_get_str(g, "general.architecture", &sv, &sl) == 0 && sl == 5 && !memcmp(sv, "llama", 5));
    CHECK(gguf_get_u32(g, "llama.block_count", &u) == 0 && u == 2);
    CHECK(gguf_get_u32(g, "llama.embedding_length", &u) == 0 && u == 256);
    CHECK(gguf_get_u32(g, "llama.feed_forward_length", &u) == 0 && u == 512);
    CHECK(gguf_get_u32(g, "llama.context_length", &u) == 0 && u == 512);
    CHECK(gguf_get_u32(g, "llama.attention.head_count", &u) == 0 && u == 4);
    CHECK(gguf_get_u32(g, "llama.attention.head_count_kv", &u) == 0 && u == 2);
    CHECK(gguf_get_u32(g, "llama.attention.key_length", &u) == 0 && u == 64);
    CHECK(gguf_get_u32(g, "llama.attention.value_length", &u) == 0 && u == 64);
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) == 0 && f == 1e-5f);
    CHECK(gguf_get_f32(g, "llama.rope.freq_base", &f) == 0 && f == 10000.0f);
    CHECK(gguf_get_u32(g, "general.file_type", &u) == 0 && u == 15);
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &bv) == 0 && bv == 1);
    check_shape(g, "token_embd.weight", KN_Q4_K, 256, 1024);
    check_shape(g, "output.weight", KN_Q6_K, 256, 1024);
    check_shape(g, "output_norm.weight", KN_F32, 256, 1);
    check_shape(g, "blk.0.attn_norm.weight", KN_F32, 256, 1);
    check_shape(g, "blk.0.attn_q.weight", KN_Q4_K, 256, 256);
    check_shape(g, "blk.0.attn_k.weight", KN_Q4_K, 256, 128);
    check_shape(g, "blk.0.attn_v.weight", KN_Q4_K, 256, 128);
    check_shape(g, "blk.1.attn_v.weight", KN_Q6_K, 256, 128); // last eighth of the layers
    check_shape(g, "blk.0.attn_output.weight", KN_Q4_K, 256, 256);
    check_shape(g, "blk.0.ffn_norm.weight", KN_F32, 256, 1);
    check_shape(g, "blk.0.ffn_gate.weight", KN_Q4_K, 256, 512);
    check_shape(g, "blk.0.ffn_up.weight", KN_Q4_K, 256, 512);
    check_shape(g, "blk.0.ffn_down.weight", KN_Q4_K, 512, 256);
    check_shape(g, "blk.1.ffn_down.weight", KN_Q6_K, 512, 256);
    CHECK(gguf_find_tensor(g, "blk.0.attn_q_norm.weight") == NULL);
    check_vocab(g, 1024);
    // Weight statistics: matrices ~N(0, 0.02), norms ~1.
    const struct gguf_tensor_info *t = gguf_find_tensor(g, "blk.0.ffn_up.weight");
    if (t) {
        int64_t n = t->ne[0] * t->ne[1];
        float *y = malloc((size_t)n * sizeof *y);
        kn_dequant_row(t->type, t->data, y, n);
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += y[i];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) v += (y[i] - m) * (y[i] - m);
        v = sqrt(v / (double)n);
        CHECK_MSG(fabs(m) < 1e-3 && v > 0.018 && v < 0.022, "mean %g std %g", m, v);
        free(y);
    }
    t = gguf_find_tensor(g, "blk.1.attn_norm.weight");
    if (t) {
        float y[256];
        kn_dequant_row(KN_F32, t->data, y, 256);
        double m = 0;
        for (int i = 0; i < 256; i++) m += y[i];
        CHECK_NEAR(m / 256, 1.0, 0.02);
    }
    gguf_close(g);
    // Deterministic per seed.
    CHECK_EQ_INT(synth_write_gguf(&s, tmp_path("tiny2.gguf"), err, sizeof err), 0);
    CHECK(files_equal(p, tmp_path("tiny2.gguf")));
    s.seed = 2;
    CHECK_EQ_INT(synth_write_gguf(&s, tmp_path("tiny3.gguf"), err, sizeof err), 0);
    CHECK(!files_equal(p, tmp_path("tiny3.gguf")));
    // A uniform weight type.
    s.q4_k_m = 0;
    s.wtype = KN_F16;
    CHECK_EQ_INT(synth_write_gguf(&s, tmp_path("tiny3.gguf"), err, sizeof err), 0);
    g = gguf_open(tmp_path("tiny3.gguf"), err, sizeof err);
    CHECK(g && tensor_type(g, "output.weight") == KN_F16 && tensor_type(g, "blk.1.attn_v.weight") == KN_F16 &&
          tensor_type(g, "blk.1.attn_norm.weight") == KN_F32);
    CHECK(g && gguf_get_u32(g, "general.file_type", &u) == 0 && u == 1);
    gguf_close(g);
    // Bad specs.
    s.n_head_kv = 3;
    CHECK(synth_write_gguf(&s, tmp_path("tiny3.gguf"), err, sizeof err) == -1 && !strncmp(err, "synth: ", 7));
    synth_preset(&s, "tiny");
    strcpy(s.arch, "gpt2");
    CHECK(synth_write_gguf(&s, tmp_path("tiny3.gguf"), err, sizeof err) == -1 && err[0]);
}

static void test_synth_gemma(void) {
    struct synth_spec s;
    char err[256];
    CHECK_EQ_INT(synth_preset(&s, "tiny-gemma3"), 0);
    s.q4_k_m = 1;
    char p[700];
    snprintf(p, sizeof p, "%s", tmp_path("tinyg.gguf"));
    CHECK_MSG(synth_write_gguf(&s, p, err, sizeof err) == 0, "%s", err);
    struct gguf *g = gguf_open(p, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    if (!g) return;
    CHECK_EQ_INT(gguf_n_tensors(g), 2 + 13 * 6);
    const char *sv;
    size_t sl;
    uint32_t u;
    int bv;
    CHECK(gguf_get_str(g, "general.architecture", &sv, &sl) == 0 && sl == 6 && !memcmp(sv, "gemma3", 6));
    CHECK(gguf_get_u32(g, "gemma3.attention.sliding_window", &u) == 0 && u == 64);
    CHECK(gguf_get_u32(g, "gemma3.attention.key_length", &u) == 0 && u == 64);
    CHECK(gguf_get_u32(g, "gemma3.attention.head_count_kv", &u) == 0 && u == 1);
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &bv) == 0 && bv == 0);
    CHECK(gguf_find_tensor(g, "output.weight") == NULL);        // tied to token_embd
    check_shape(g, "token_embd.weight", KN_Q6_K, 256, 1024);    // tied output gets the output's type
    check_shape(g, "blk.0.attn_q.weight", KN_Q4_K, 256, 256);
    check_shape(g, "blk.0.attn_k.weight", KN_Q4_K, 256, 64);
    check_shape(g, "blk.0.attn_output.weight", KN_Q4_K, 256, 256);
    check_shape(g, "blk.0.attn_q_norm.weight", KN_F32, 64, 1);
    check_shape(g, "blk.0.attn_k_norm.weight", KN_F32, 64, 1);
    check_shape(g, "blk.5.post_attention_norm.weight", KN_F32, 256, 1);
    check_shape(g, "blk.5.post_ffw_norm.weight", KN_F32, 256, 1);
    check_vocab(g, 1024);
    gguf_close(g);
}

// The Q4_K_M layer pattern: llama.cpp's, which for 18 layers is what the real Gemma 3 270M file holds.
static void test_q4_k_m_rule(void) {
    struct synth_spec s;
    synth_preset(&s, "tinyllama");
    s.q4_k_m = 1;
    char name[64];
    int got = 0;
    for (int il = 0; il < 22; il++) {
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        if (synth_tensor_type(&s, name, 2, 2048) == KN_Q6_K) got |= 1 << il;
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        CHECK_EQ_INT(synth_tensor_type(&s, name, 2, 5632), (got >> il) & 1 ? KN_Q6_K : KN_Q4_K);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", il);
        CHECK_EQ_INT(synth_tensor_type(&s, name, 2, 2048), KN_Q4_K);
    }
    int want = 0;
    const int layers22[] = {0, 1, 4, 7, 10, 13, 16, 19, 20, 21};
    for (size_t k = 0; k < sizeof layers22 / sizeof layers22[0]; k++) want |= 1 << layers22[k];
    CHECK_EQ_INT(got, want);
    CHECK_EQ_INT(synth_tensor_type(&s, "output.weight", 2, 2048), KN_Q6_K);
    CHECK_EQ_INT(synth_tensor_type(&s, "token_embd.weight", 2, 2048), KN_Q4_K);
    CHECK_EQ_INT(synth_tensor_type(&s, "output_norm.weight", 1, 2048), KN_F32);
    // Gemma 3 270M: dim 640 is not a multiple of 256, so k-quants fall back (Q4_K -> Q5_0, Q6_K -> Q8_0).
    synth_preset(&s, "gemma3-270m");
    s.q4_k_m = 1;
    const int layers18[] = {0, 1, 4, 7, 10, 13, 15, 16, 17};
    int bad = 0;
    for (int il = 0; il < 18; il++) {
        int more = 0;
        for (size_t k = 0; k < sizeof layers18 / sizeof layers18[0]; k++) more |= layers18[k] == il;
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        bad += synth_tensor_type(&s, name, 2, 640) != (more ? KN_Q8_0 : KN_Q5_0);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", il);
        bad += synth_tensor_type(&s, name, 2, 2048) != (more ? KN_Q6_K : KN_Q4_K);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", il);
        bad += synth_tensor_type(&s, name, 2, 1024) != KN_Q4_K;
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", il);
        bad += synth_tensor_type(&s, name, 2, 640) != KN_Q5_0;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(synth_tensor_type(&s, "token_embd.weight", 2, 640), KN_Q8_0);
}

static void test_real_gemma(void) {
    const char *p = getenv("KVCHAT_GEMMA");
    if (!p || !*p) p = "assets/models/gemma-3-270m-q4_k_m.gguf";
    if (access(p, R_OK) != 0) {
        TEST_SKIP("no Gemma 3 270M GGUF at %s (set KVCHAT_GEMMA or run make model)", p);
        return;
    }
    char err[256];
    struct gguf *g = gguf_open(p, err, sizeof err);
    CHECK_MSG(g != NULL, "%s", err);
    if (!g) return;
    CHECK_EQ_INT(gguf_n_tensors(g), 236);
    const char *sv;
    size_t sl;
    uint32_t u;
    float f;
    uint64_t n;
    int et;
    const void *d;
    CHECK(gguf_get_str(g, "general.architecture", &sv, &sl) == 0 && sl == 6 && !memcmp(sv, "gemma3", 6));
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &d) == 0 && et == GGUF_T_STRING && n == 262144);
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &sv, &sl) == 0 && sl == 5 && !memcmp(sv, "<pad>", 5));
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 106, &sv, &sl) == 0 && sl == 13 &&
          !memcmp(sv, "<end_of_turn>", 13));
    CHECK(gguf_get_u32(g, "gemma3.block_count", &u) == 0 && u == 18);
    CHECK(gguf_get_u32(g, "gemma3.attention.sliding_window", &u) == 0 && u == 512);
    CHECK(gguf_get_f32(g, "gemma3.attention.layer_norm_rms_epsilon", &f) == 0 && fabsf(f - 1e-6f) < 1e-9f);
    check_shape(g, "token_embd.weight", KN_Q8_0, 640, 262144);
    // Our Q4_K_M rule reproduces every tensor type in the file, and every first row decodes to finite values.
    struct synth_spec s;
    synth_preset(&s, "gemma3-270m");
    s.q4_k_m = 1;
    int mismatch = 0, nonfinite = 0;
    float *row = malloc(262144 * sizeof *row);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        if (synth_tensor_type(&s, t->name, t->n_dims, t->ne[0]) != t->type) {
            if (mismatch++ < 5) fprintf(stderr, "type rule differs for %s (%s)\n", t->name, kn_type_name(t->type));
        }
        kn_dequant_row(t->type, t->data, row, t->ne[0]);
        for (int64_t k = 0; k < t->ne[0]; k++) nonfinite += !isfinite(row[k]);
    }
    free(row);
    CHECK_EQ_INT(mismatch, 0);
    CHECK_EQ_INT(nonfinite, 0);
    gguf_close(g);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/kvchat_test_gguf_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        CHECK(0);
        return test_done();
    }
    test_small_valid();
    test_malformed();
    test_writer_roundtrip();
    test_big_vocab();
    test_q4_k_m_rule();
    test_synth_llama();
    test_synth_gemma();
    test_real_gemma();
    static const char *const files[] = {"small.gguf", "bad.gguf", "rt.gguf", "vocab.gguf",
                                        "tiny.gguf", "tiny2.gguf", "tiny3.gguf", "tinyg.gguf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) remove(tmp_path(files[i]));
    rmdir(tmpdir);
    return test_done();
}
