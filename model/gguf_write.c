// model/gguf_write.c — GGUF v3 writer for fixtures and generated benchmark models (streams tensor data).
#include "model/gguf.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kn_quant.h"
#include "kernels/kn_types.h"

#define GW_ALIGN 32
#define GW_MAX_THREADS 8
#define GW_CHUNK_VALUES (1 << 20) // values generated and quantised per batch of rows

struct gw_tensor {
    char *name;
    int type, n_dims;
    int64_t ne[4];
    int64_t n_rows; // ne[1] * ne[2] * ne[3]
    size_t nbytes;
    void *bytes; // encoded data (NULL for generated tensors)
    void (*fill)(void *ctx, int64_t row, float *dst);
    void *ctx;
};

struct gguf_writer {
    uint8_t *meta; // serialised metadata entries
    size_t meta_len, meta_cap;
    char **keys;
    int64_t n_kv;
    size_t keys_cap;
    struct gw_tensor *t;
    int64_t n_t;
    size_t t_cap;
    char bad[200]; // first error from a void setter, reported by save
};

struct gguf_writer *gguf_writer_init(void) { return calloc(1, sizeof(struct gguf_writer)); }

void gguf_writer_free(struct gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].bytes);
    }
    free(w->keys);
    free(w->t);
    free(w->meta);
    free(w);
}

static void set_bad(struct gguf_writer *w, const char *msg, const char *key) {
    if (!w->bad[0]) snprintf(w->bad, sizeof w->bad, "%s '%s'", msg, key ? key : "(null)");
}

static bool meta_put(struct gguf_writer *w, const void *p, size_t n) {
    if (w->meta_len + n > w->meta_cap) {
        size_t c = w->meta_cap ? w->meta_cap : 4096;
        while (c < w->meta_len + n) c *= 2;
        uint8_t *m = realloc(w->meta, c);
        if (!m) return false;
        w->meta = m;
        w->meta_cap = c;
    }
    memcpy(w->meta + w->meta_len, p, n);
    w->meta_len += n;
    return true;
}

static bool put_u32(struct gguf_writer *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    return meta_put(w, b, 4);
}

static bool put_u64(struct gguf_writer *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return meta_put(w, b, 8);
}

static bool put_str(struct gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    return put_u64(w, n) && meta_put(w, s, n);
}

// Starts an entry: checks the key is new, records it, writes key and type. false (and w->bad) on failure.
static bool begin_kv(struct gguf_writer *w, const char *key, uint32_t type) {
    if (!key || !key[0]) {
        set_bad(w, "empty metadata key", key);
        return false;
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->keys[i], key)) {
            set_bad(w, "duplicate metadata key", key);
            return false;
        }
    }
    if ((size_t)w->n_kv == w->keys_cap) {
        size_t c = w->keys_cap ? w->keys_cap * 2 : 32;
        char **k = realloc(w->keys, c * sizeof *k);
        if (!k) goto oom;
        w->keys = k;
        w->keys_cap = c;
    }
    char *copy = malloc(strlen(key) + 1);
    if (!copy) goto oom;
    strcpy(copy, key);
    w->keys[w->n_kv++] = copy;
    if (!put_str(w, key) || !put_u32(w, type)) goto oom;
    return true;
oom:
    set_bad(w, "out of memory adding", key);
    return false;
}

static void end_kv(struct gguf_writer *w, bool ok, const char *key) {
    if (!ok) set_bad(w, "out of memory adding", key);
}

void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v) {
    if (begin_kv(w, key, GGUF_T_UINT32)) end_kv(w, put_u32(w, v), key);
}

void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v) {
    if (begin_kv(w, key, GGUF_T_INT32)) end_kv(w, put_u32(w, (uint32_t)v), key);
}

void gguf_w_f32(struct gguf_writer *w, const char *key, float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    if (begin_kv(w, key, GGUF_T_FLOAT32)) end_kv(w, put_u32(w, b), key);
}

void gguf_w_bool(struct gguf_writer *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    if (begin_kv(w, key, GGUF_T_BOOL)) end_kv(w, meta_put(w, &b, 1), key);
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *v) {
    if (!v) {
        set_bad(w, "NULL string value for", key);
        return;
    }
    if (begin_kv(w, key, GGUF_T_STRING)) end_kv(w, put_str(w, v), key);
}

void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) {
            set_bad(w, "NULL string element in", key);
            return;
        }
    }
    if (!begin_kv(w, key, GGUF_T_ARRAY)) return;
    bool ok = put_u32(w, GGUF_T_STRING) && put_u64(w, n);
    for (uint64_t i = 0; ok && i < n; i++) ok = put_str(w, v[i]);
    end_kv(w, ok, key);
}

void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n) {
    if (!begin_kv(w, key, GGUF_T_ARRAY)) return;
    bool ok = put_u32(w, GGUF_T_FLOAT32) && put_u64(w, n);
    for (uint64_t i = 0; ok && i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], 4);
        ok = put_u32(w, b);
    }
    end_kv(w, ok, key);
}

void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    if (!begin_kv(w, key, GGUF_T_ARRAY)) return;
    bool ok = put_u32(w, GGUF_T_INT32) && put_u64(w, n);
    for (uint64_t i = 0; ok && i < n; i++) ok = put_u32(w, (uint32_t)v[i]);
    end_kv(w, ok, key);
}

// Validates name/type/shape and appends a tensor record (data left to the caller). NULL on bad arguments.
static struct gw_tensor *add_tensor(struct gguf_writer *w, const char *name, int type, int n_dims,
                                    const int64_t *ne) {
    if (!name || !name[0] || !ne || n_dims < 1 || n_dims > 4 || !kn_type_block_bytes(type)) return NULL;
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return NULL;
    int64_t n_rows = 1, dims[4] = {1, 1, 1, 1};
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1) return NULL;
        dims[d] = ne[d];
        if (d > 0) {
            if (n_rows > INT64_MAX / ne[d]) return NULL;
            n_rows *= ne[d];
        }
    }
    if (dims[0] % kn_type_block_size(type)) return NULL;
    size_t row_bytes = kn_row_bytes(type, dims[0]);
    if ((uint64_t)n_rows > SIZE_MAX / row_bytes) return NULL;
    if ((size_t)w->n_t == w->t_cap) {
        size_t c = w->t_cap ? w->t_cap * 2 : 64;
        struct gw_tensor *t = realloc(w->t, c * sizeof *t);
        if (!t) return NULL;
        w->t = t;
        w->t_cap = c;
    }
    char *copy = malloc(strlen(name) + 1);
    if (!copy) return NULL;
    strcpy(copy, name);
    struct gw_tensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->type = type;
    t->n_dims = n_dims;
    memcpy(t->ne, dims, sizeof dims);
    t->n_rows = n_rows;
    t->nbytes = row_bytes * (size_t)n_rows;
    return t;
}

static void drop_last_tensor(struct gguf_writer *w) {
    w->n_t--;
    free(w->t[w->n_t].name);
    free(w->t[w->n_t].bytes);
}

int gguf_w_tensor_f32(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const float *values) {
    if (!values) return -1;
    struct gw_tensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return -1;
    t->bytes = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->bytes) {
        drop_last_tensor(w);
        return -1;
    }
    size_t row_bytes = kn_row_bytes(type, t->ne[0]);
    for (int64_t r = 0; r < t->n_rows; r++)
        kn_quantize_row(type, values + r * t->ne[0], (uint8_t *)t->bytes + (size_t)r * row_bytes, t->ne[0]);
    return 0;
}

int gguf_w_tensor_raw(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const void *bytes, size_t nbytes) {
    if (!bytes) return -1;
    struct gw_tensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return -1;
    if (t->nbytes != nbytes || !(t->bytes = malloc(nbytes ? nbytes : 1))) {
        drop_last_tensor(w);
        return -1;
    }
    memcpy(t->bytes, bytes, nbytes);
    return 0;
}

int gguf_w_tensor_gen(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      void (*fill)(void *ctx, int64_t row, float *dst), void *ctx) {
    if (!fill) return -1;
    struct gw_tensor *t = add_tensor(w, name, type, n_dims, ne);
    if (!t) return -1;
    t->fill = fill;
    t->ctx = ctx;
    return 0;
}

// ---- save -------------------------------------------------------------------------------------------------

// One worker's share of a batch of generated rows.
struct gw_job {
    const struct gw_tensor *t;
    int64_t row0, n_rows; // rows [row0, row0 + n_rows) of the tensor
    uint8_t *out;         // where row row0 goes
    float *scratch;       // ne[0] floats
};

static void *gw_work(void *arg) {
    struct gw_job *j = arg;
    size_t rb = kn_row_bytes(j->t->type, j->t->ne[0]);
    for (int64_t r = 0; r < j->n_rows; r++) {
        j->t->fill(j->t->ctx, j->row0 + r, j->scratch);
        kn_quantize_row(j->t->type, j->scratch, j->out + (size_t)r * rb, j->t->ne[0]);
    }
    return NULL;
}

static int gw_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > GW_MAX_THREADS ? GW_MAX_THREADS : (int)n;
}

// Generates, quantises and writes a generated tensor in batches of rows, split across threads.
static bool write_generated(const struct gw_tensor *t, FILE *f, int n_threads) {
    size_t rb = kn_row_bytes(t->type, t->ne[0]);
    int64_t batch = GW_CHUNK_VALUES / t->ne[0];
    if (batch < n_threads) batch = n_threads;
    if (batch > t->n_rows) batch = t->n_rows;
    uint8_t *out = malloc((size_t)batch * rb);
    float *scratch = malloc((size_t)n_threads * (size_t)t->ne[0] * sizeof(float));
    bool ok = out && scratch;
    for (int64_t r0 = 0; ok && r0 < t->n_rows; r0 += batch) {
        int64_t nr = t->n_rows - r0 < batch ? t->n_rows - r0 : batch;
        struct gw_job jobs[GW_MAX_THREADS];
        pthread_t tid[GW_MAX_THREADS];
        bool started[GW_MAX_THREADS] = {false};
        int nt = nr < n_threads ? (int)nr : n_threads;
        int64_t per = (nr + nt - 1) / nt;
        for (int k = 0; k < nt; k++) {
            int64_t a = k * per, b = a + per < nr ? a + per : nr;
            jobs[k] = (struct gw_job){t, r0 + a, b > a ? b - a : 0, out + (size_t)a * rb,
                                      scratch + (size_t)k * (size_t)t->ne[0]};
            // Worker 0 is this thread; if a thread cannot start, its share runs here too.
            if (k > 0) started[k] = pthread_create(&tid[k], NULL, gw_work, &jobs[k]) == 0;
        }
        gw_work(&jobs[0]);
        for (int k = 1; k < nt; k++) {
            if (started[k])
                pthread_join(tid[k], NULL);
            else
                gw_work(&jobs[k]);
        }
        ok = fwrite(out, rb, (size_t)nr, f) == (size_t)nr;
    }
    free(out);
    free(scratch);
    return ok;
}

static bool f_u32(FILE *f, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    return fwrite(b, 1, 4, f) == 4;
}

static bool f_u64(FILE *f, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return fwrite(b, 1, 8, f) == 8;
}

static bool f_pad(FILE *f, uint64_t pos) {
    static const uint8_t zeros[GW_ALIGN];
    size_t pad = (size_t)((GW_ALIGN - pos % GW_ALIGN) % GW_ALIGN);
    return fwrite(zeros, 1, pad, f) == pad;
}

int gguf_writer_save(struct gguf_writer *w, const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (w->bad[0]) {
        if (err && errlen) snprintf(err, errlen, "%s: %s", path, w->bad);
        return -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot create (%s)", path, strerror(errno));
        return -1;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    errno = 0;
    uint64_t pos = 24 + w->meta_len;
    bool ok = fwrite("GGUF", 1, 4, f) == 4 && f_u32(f, 3) && f_u64(f, (uint64_t)w->n_t) &&
              f_u64(f, (uint64_t)w->n_kv) && fwrite(w->meta, 1, w->meta_len, f) == w->meta_len;
    uint64_t off = 0;
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        const struct gw_tensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        ok = f_u64(f, nl) && fwrite(t->name, 1, nl, f) == nl && f_u32(f, (uint32_t)t->n_dims);
        for (int d = 0; ok && d < t->n_dims; d++) ok = f_u64(f, (uint64_t)t->ne[d]);
        ok = ok && f_u32(f, (uint32_t)t->type) && f_u64(f, off);
        pos += 8 + nl + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
        off += (t->nbytes + GW_ALIGN - 1) / GW_ALIGN * GW_ALIGN;
    }
    ok = ok && f_pad(f, pos);
    int n_threads = gw_threads();
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        const struct gw_tensor *t = &w->t[i];
        if (t->bytes)
            ok = fwrite(t->bytes, 1, t->nbytes, f) == t->nbytes;
        else
            ok = write_generated(t, f, n_threads);
        ok = ok && f_pad(f, t->nbytes);
    }
    int saved_errno = ok ? 0 : errno;
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        if (err && errlen)
            snprintf(err, errlen, "%s: write failed (%s)", path, saved_errno ? strerror(saved_errno) : "error");
        remove(path);
        return -1;
    }
    return 0;
}
