// model/gguf.c — GGUF v2/v3 reader: maps the file read-only and validates every size, count and offset in it.
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kn_types.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DEPTH 4 // arrays of arrays of ... nested at most this deep

// One metadata entry. Offsets are from the start of the mapping.
struct gguf_kv {
    const char *key;      // NUL-terminated copy (in g->names)
    size_t key_off;       // key bytes in the mapping (during parsing)
    size_t key_len;
    int type;             // enum gguf_vtype
    size_t val;           // scalar: the value; string: its u64 length prefix
    int elem_type;        // arrays: element type
    uint64_t n;           // arrays: element count
    size_t arr_data;      // arrays: first element
    uint64_t *str_off;    // string arrays: offset of element i's length prefix (O(1) access)
};

struct gguf {
    const uint8_t *map;
    size_t size;
    int version;
    int64_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor_info *tensors;
    size_t *tensor_name_off; // during parsing: name bytes in the mapping
    size_t *tensor_name_len;
    char *names;             // arena of NUL-terminated keys and tensor names
    uint32_t alignment;
    size_t data_start;
    int64_t *kv_hash, *t_hash; // open addressing, index + 1 (0 = empty)
    size_t kv_hash_cap, t_hash_cap;
};

// ---- parsing context ------------------------------------------------------------------------------------

struct pctx {
    const uint8_t *p;
    size_t size, pos;
    char *err;
    size_t errlen;
    const char *base; // file base name for messages
};

static void perr(struct pctx *P, const char *fmt, ...) {
    if (!P->err || !P->errlen) return;
    int k = snprintf(P->err, P->errlen, "%s: ", P->base);
    if (k < 0 || (size_t)k >= P->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err + k, P->errlen - (size_t)k, fmt, ap);
    va_end(ap);
}

static size_t left(const struct pctx *P) { return P->size - P->pos; }

static uint64_t le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
static uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static bool rd_u32(struct pctx *P, uint32_t *v) {
    if (left(P) < 4) return false;
    *v = le32(P->p + P->pos);
    P->pos += 4;
    return true;
}
static bool rd_u64(struct pctx *P, uint64_t *v) {
    if (left(P) < 8) return false;
    *v = le64(P->p + P->pos);
    P->pos += 8;
    return true;
}

// Copies up to 48 bytes of a file string into out as printable text (for messages only).
static const char *shown(const uint8_t *s, size_t len, char *out, size_t outlen) {
    size_t n = len < 48 ? len : 48, j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen; i++) out[j++] = (s[i] >= 32 && s[i] < 127) ? (char)s[i] : '?';
    if (len > n && j + 4 < outlen) {
        memcpy(out + j, "...", 3);
        j += 3;
    }
    out[j] = 0;
    return out;
}

static size_t vtype_size(int t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_valid(uint32_t t) { return t <= GGUF_T_FLOAT64; }

static const char *vtype_name(int t) {
    static const char *const names[] = {"uint8", "int8",  "uint16", "int16", "uint32", "int32", "float32",
                                        "bool",  "string", "array", "uint64", "int64", "float64"};
    return t >= 0 && t <= GGUF_T_FLOAT64 ? names[t] : "?";
}

// Reads a string's length prefix and skips its bytes. `what` names it in messages.
static bool skip_str(struct pctx *P, const char *what, size_t *off, uint64_t *len) {
    uint64_t n;
    size_t at = P->pos;
    if (!rd_u64(P, &n)) {
        perr(P, "truncated (%s runs past end of file)", what);
        return false;
    }
    if (n > left(P)) {
        perr(P, "truncated (%s: string of %llu bytes at offset %zu runs past end of file)", what,
             (unsigned long long)n, at);
        return false;
    }
    *off = P->pos;
    *len = n;
    P->pos += (size_t)n;
    return true;
}

// Validates one value of type t (whose type tag has been read) and moves past it.
static bool skip_value(struct pctx *P, const char *what, uint32_t t, int depth) {
    size_t sz = vtype_size((int)t);
    if (sz) {
        if (left(P) < sz) {
            perr(P, "truncated (%s runs past end of file)", what);
            return false;
        }
        P->pos += sz;
        return true;
    }
    if (t == GGUF_T_STRING) {
        size_t off;
        uint64_t len;
        return skip_str(P, what, &off, &len);
    }
    if (t != GGUF_T_ARRAY) {
        perr(P, "%s has invalid value type %u", what, t);
        return false;
    }
    if (depth >= GGUF_MAX_DEPTH) {
        perr(P, "%s: arrays nested more than %d deep", what, GGUF_MAX_DEPTH);
        return false;
    }
    uint32_t et;
    uint64_t n;
    if (!rd_u32(P, &et) || !rd_u64(P, &n)) {
        perr(P, "truncated (%s runs past end of file)", what);
        return false;
    }
    if (!vtype_valid(et)) {
        perr(P, "%s: array has invalid element type %u", what, et);
        return false;
    }
    size_t esz = vtype_size((int)et);
    // The least room one element can take: fixed size, a string's length prefix, a nested array header.
    size_t min_el = esz ? esz : (et == GGUF_T_STRING ? 8 : 12);
    if (n > left(P) / min_el) {
        perr(P, "%s: array of %llu %s elements does not fit in the file", what, (unsigned long long)n,
             vtype_name((int)et));
        return false;
    }
    if (esz) {
        P->pos += (size_t)n * esz;
        return true;
    }
    for (uint64_t i = 0; i < n; i++)
        if (!skip_value(P, what, et, depth + 1)) return false;
    return true;
}

// ---- hash tables over NUL-terminated names ---------------------------------------------------------------

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

// Builds a table over n names (name(i) gives name i); returns the index of the first duplicate, -1 if none,
// -2 on allocation failure.
static int64_t hash_build(int64_t **tab, size_t *cap, int64_t n, const char *(*name)(const struct gguf *, int64_t),
                          const struct gguf *g) {
    size_t c = 16;
    while (c < (size_t)n * 2) c <<= 1;
    *tab = calloc(c, sizeof **tab);
    if (!*tab) return -2;
    *cap = c;
    for (int64_t i = 0; i < n; i++) {
        const char *s = name(g, i);
        size_t h = (size_t)name_hash(s) & (c - 1);
        while ((*tab)[h]) {
            if (!strcmp(name(g, (*tab)[h] - 1), s)) return i;
            h = (h + 1) & (c - 1);
        }
        (*tab)[h] = i + 1;
    }
    return -1;
}

static int64_t hash_find(const int64_t *tab, size_t cap, const char *key,
                         const char *(*name)(const struct gguf *, int64_t), const struct gguf *g) {
    if (!tab || !key) return -1;
    size_t h = (size_t)name_hash(key) & (cap - 1);
    while (tab[h]) {
        if (!strcmp(name(g, tab[h] - 1), key)) return tab[h] - 1;
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

static const char *kv_name(const struct gguf *g, int64_t i) { return g->kv[i].key; }
static const char *t_name(const struct gguf *g, int64_t i) { return g->tensors[i].name; }

// ---- open -------------------------------------------------------------------------------------------------

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *r) {
    if (a && b > UINT64_MAX / a) return false;
    *r = a * b;
    return true;
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elsz) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need) c *= 2;
    void *p = realloc(*arr, c * elsz);
    if (!p) return false;
    *arr = p;
    *cap = c;
    return true;
}

static bool parse_kvs(struct gguf *g, struct pctx *P) {
    size_t cap = 0;
    int64_t n_kv = g->n_kv;
    g->n_kv = 0;
    for (int64_t i = 0; i < n_kv; i++) {
        char what[96], ks[64];
        snprintf(what, sizeof what, "metadata entry %lld", (long long)i);
        if (!grow((void **)&g->kv, &cap, (size_t)i + 1, sizeof *g->kv)) {
            perr(P, "out of memory");
            return false;
        }
        struct gguf_kv *kv = &g->kv[i];
        memset(kv, 0, sizeof *kv);
        uint64_t klen;
        if (!skip_str(P, what, &kv->key_off, &klen)) return false;
        kv->key_len = (size_t)klen;
        if (klen == 0) {
            perr(P, "metadata entry %lld has an empty key", (long long)i);
            return false;
        }
        if (memchr(P->p + kv->key_off, 0, kv->key_len)) {
            perr(P, "metadata key '%s' contains a NUL byte", shown(P->p + kv->key_off, kv->key_len, ks, sizeof ks));
            return false;
        }
        snprintf(what, sizeof what, "metadata entry %lld '%s'", (long long)i,
                 shown(P->p + kv->key_off, kv->key_len, ks, sizeof ks));
        uint32_t t;
        if (!rd_u32(P, &t)) {
            perr(P, "truncated (%s runs past end of file)", what);
            g->n_kv = i + 1;
            return false;
        }
        g->n_kv = i + 1;
        if (!vtype_valid(t)) {
            perr(P, "%s has invalid value type %u", what, t);
            return false;
        }
        kv->type = (int)t;
        kv->val = P->pos;
        if (t == GGUF_T_ARRAY) {
            // Read the header here so string arrays can be indexed.
            uint32_t et;
            uint64_t n;
            size_t hdr = P->pos;
            if (!rd_u32(P, &et) || !rd_u64(P, &n)) {
                perr(P, "truncated (%s runs past end of file)", what);
                return false;
            }
            P->pos = hdr;
            if (!skip_value(P, what, t, 0)) return false;
            kv->elem_type = (int)et;
            kv->n = n;
            kv->arr_data = hdr + 12;
            if (et == GGUF_T_STRING && n > 0) {
                kv->str_off = malloc((size_t)n * sizeof *kv->str_off);
                if (!kv->str_off) {
                    perr(P, "out of memory");
                    return false;
                }
                size_t at = kv->arr_data; // already validated by skip_value
                for (uint64_t k = 0; k < n; k++) {
                    kv->str_off[k] = at;
                    at += 8 + (size_t)le64(P->p + at);
                }
            }
        } else if (!skip_value(P, what, t, 0)) {
            return false;
        }
    }
    return true;
}

static bool parse_tensor_infos(struct gguf *g, struct pctx *P) {
    size_t cap = 0, cap_off = 0, cap_len = 0;
    int64_t n = g->n_tensors;
    g->n_tensors = 0;
    for (int64_t i = 0; i < n; i++) {
        char what[64], ns[64];
        snprintf(what, sizeof what, "tensor info %lld", (long long)i);
        if (!grow((void **)&g->tensors, &cap, (size_t)i + 1, sizeof *g->tensors) ||
            !grow((void **)&g->tensor_name_off, &cap_off, (size_t)i + 1, sizeof(size_t)) ||
            !grow((void **)&g->tensor_name_len, &cap_len, (size_t)i + 1, sizeof(size_t))) {
            perr(P, "out of memory");
            return false;
        }
        struct gguf_tensor_info *t = &g->tensors[i];
        memset(t, 0, sizeof *t);
        size_t noff;
        uint64_t nlen;
        uint32_t nd, type;
        if (!skip_str(P, what, &noff, &nlen)) return false;
        g->tensor_name_off[i] = noff;
        g->tensor_name_len[i] = (size_t)nlen;
        const char *nm = shown(P->p + noff, (size_t)nlen, ns, sizeof ns);
        if (nlen == 0) {
            perr(P, "tensor info %lld has an empty name", (long long)i);
            return false;
        }
        if (memchr(P->p + noff, 0, (size_t)nlen)) {
            perr(P, "tensor name '%s' contains a NUL byte", nm);
            return false;
        }
        if (!rd_u32(P, &nd)) {
            perr(P, "truncated (%s '%s' runs past end of file)", what, nm);
            return false;
        }
        if (nd < 1 || nd > 4) {
            perr(P, "tensor '%s' has %u dimensions (1..4 supported)", nm, nd);
            return false;
        }
        t->n_dims = (int)nd;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            if (!rd_u64(P, &v)) {
                perr(P, "truncated (%s '%s' runs past end of file)", what, nm);
                return false;
            }
            if (v == 0 || v > (uint64_t)INT64_MAX) {
                perr(P, "tensor '%s' has invalid size %llu in dimension %u", nm, (unsigned long long)v, d);
                return false;
            }
            t->ne[d] = (int64_t)v;
        }
        if (!rd_u32(P, &type) || !rd_u64(P, &t->offset)) {
            perr(P, "truncated (%s '%s' runs past end of file)", what, nm);
            return false;
        }
        g->n_tensors = i + 1;
        if (type > 0xffff || kn_type_block_bytes((int)type) == 0) {
            perr(P, "tensor '%s' has unsupported type %u (%s)", nm, type, kn_type_name((int)type));
            return false;
        }
        t->type = (int)type;
        uint64_t bs = (uint64_t)kn_type_block_size(t->type), count = 1, nbytes;
        for (int d = 0; d < 4; d++) {
            if (!mul_ok(count, (uint64_t)t->ne[d], &count) || count > (uint64_t)INT64_MAX) {
                perr(P, "tensor '%s' has too many elements", nm);
                return false;
            }
        }
        if ((uint64_t)t->ne[0] % bs) {
            perr(P, "tensor '%s': row length %lld is not a multiple of the %s block size %llu", nm,
                 (long long)t->ne[0], kn_type_name(t->type), (unsigned long long)bs);
            return false;
        }
        if (!mul_ok(count / bs, (uint64_t)kn_type_block_bytes(t->type), &nbytes) || nbytes > SIZE_MAX) {
            perr(P, "tensor '%s' is too large", nm);
            return false;
        }
        t->nbytes = (size_t)nbytes;
    }
    return true;
}

static bool get_alignment(struct gguf *g, struct pctx *P) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    uint32_t a;
    int r = gguf_get_u32(g, "general.alignment", &a);
    if (r == -1) return true;
    if (r != 0 || a == 0 || (a & (a - 1))) {
        perr(P, "general.alignment must be a power of two that fits in uint32");
        return false;
    }
    g->alignment = a;
    return true;
}

static bool finish_names(struct gguf *g, struct pctx *P) {
    size_t total = 1;
    for (int64_t i = 0; i < g->n_kv; i++) total += g->kv[i].key_len + 1;
    for (int64_t i = 0; i < g->n_tensors; i++) total += g->tensor_name_len[i] + 1;
    g->names = malloc(total);
    if (!g->names) {
        perr(P, "out of memory");
        return false;
    }
    char *w = g->names;
    for (int64_t i = 0; i < g->n_kv; i++) {
        memcpy(w, g->map + g->kv[i].key_off, g->kv[i].key_len);
        w[g->kv[i].key_len] = 0;
        g->kv[i].key = w;
        w += g->kv[i].key_len + 1;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        memcpy(w, g->map + g->tensor_name_off[i], g->tensor_name_len[i]);
        w[g->tensor_name_len[i]] = 0;
        g->tensors[i].name = w;
        w += g->tensor_name_len[i] + 1;
    }
    free(g->tensor_name_off);
    free(g->tensor_name_len);
    g->tensor_name_off = g->tensor_name_len = NULL;

    char ks[64];
    int64_t dup = hash_build(&g->kv_hash, &g->kv_hash_cap, g->n_kv, kv_name, g);
    if (dup >= 0) {
        perr(P, "duplicate metadata key '%s'", shown((const uint8_t *)g->kv[dup].key, g->kv[dup].key_len, ks, sizeof ks));
        return false;
    }
    if (dup == -1) dup = hash_build(&g->t_hash, &g->t_hash_cap, g->n_tensors, t_name, g);
    if (dup >= 0) {
        perr(P, "duplicate tensor name '%s'",
             shown((const uint8_t *)g->tensors[dup].name, strlen(g->tensors[dup].name), ks, sizeof ks));
        return false;
    }
    if (dup == -2) {
        perr(P, "out of memory");
        return false;
    }
    return true;
}

static bool place_tensors(struct gguf *g, struct pctx *P) {
    size_t a = g->alignment, end = P->pos;
    if (end > SIZE_MAX - (a - 1)) {
        perr(P, "data section offset overflows");
        return false;
    }
    g->data_start = (end + a - 1) / a * a;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor_info *t = &g->tensors[i];
        if (t->offset % a) {
            perr(P, "tensor '%s' data offset %llu is not aligned to %zu", t->name, (unsigned long long)t->offset, a);
            return false;
        }
        size_t room = g->size > g->data_start ? g->size - g->data_start : 0;
        if (t->offset > room || t->nbytes > room - t->offset) {
            perr(P, "truncated (tensor '%s' data, %zu bytes at data offset %llu, runs past end of file)", t->name,
                 t->nbytes, (unsigned long long)t->offset);
            return false;
        }
        t->data = g->map + g->data_start + t->offset;
    }
    return true;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

struct gguf *gguf_open(const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    struct pctx P = {.err = err, .errlen = errlen, .base = path ? base_name(path) : "(null)"};
    if (!path) {
        perr(&P, "cannot open (no path)");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open (not a regular file)", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 4) {
        close(fd);
        perr(&P, st.st_size == 0 ? "not a GGUF file (empty file)" : "not a GGUF file (too short, %lld bytes)",
             (long long)st.st_size);
        return NULL;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        perr(&P, "file too large to map");
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        perr(&P, "cannot map (%s)", strerror(map_errno));
        return NULL;
    }
    struct gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(map, size);
        perr(&P, "out of memory");
        return NULL;
    }
    g->map = map;
    g->size = size;
    P.p = map;
    P.size = size;

    uint32_t version;
    uint64_t nt, nkv;
    if (memcmp(g->map, GGUF_MAGIC, 4)) {
        perr(&P, "not a GGUF file (bad magic)");
        goto fail;
    }
    P.pos = 4;
    if (!rd_u32(&P, &version)) {
        perr(&P, "truncated (header)");
        goto fail;
    }
    g->version = (int)version;
    if (version != 2 && version != 3) {
        if (version > 0xffff && (version & 0xffff) == 0)
            perr(&P, "unsupported GGUF version %u (big-endian file?)", version);
        else
            perr(&P, "unsupported GGUF version %u", version);
        goto fail;
    }
    if (!rd_u64(&P, &nt) || !rd_u64(&P, &nkv)) {
        perr(&P, "truncated (header)");
        goto fail;
    }
    // A metadata entry takes at least 13 bytes (key length, type, one value byte), a tensor info 32.
    if (nkv > left(&P) / 13) {
        perr(&P, "metadata count %llu exceeds what the file can hold", (unsigned long long)nkv);
        goto fail;
    }
    if (nt > left(&P) / 32) {
        perr(&P, "tensor count %llu exceeds what the file can hold", (unsigned long long)nt);
        goto fail;
    }
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    if (!parse_kvs(g, &P)) goto fail;
    if (!parse_tensor_infos(g, &P)) goto fail;
    if (!finish_names(g, &P)) goto fail;
    if (!get_alignment(g, &P)) goto fail;
    if (!place_tensors(g, &P)) goto fail;
    return g;
fail:
    // Names may not have been built yet: keys and tensor names still point nowhere, which close tolerates.
    gguf_close(g);
    return NULL;
}

void gguf_close(struct gguf *g) {
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].str_off);
    free(g->kv);
    free(g->tensors);
    free(g->tensor_name_off);
    free(g->tensor_name_len);
    free(g->names);
    free(g->kv_hash);
    free(g->t_hash);
    if (g->map) munmap((void *)g->map, g->size);
    free(g);
}

int gguf_version(const struct gguf *g) { return g->version; }
size_t gguf_file_size(const struct gguf *g) { return g->size; }

// ---- metadata getters --------------------------------------------------------------------------------------

static const struct gguf_kv *find_kv(const struct gguf *g, const char *key) {
    int64_t i = hash_find(g->kv_hash, g->kv_hash_cap, key, kv_name, g);
    return i < 0 ? NULL : &g->kv[i];
}

// Integer value of a scalar entry as (negative flag, magnitude); false if it is not an integer type.
static bool kv_int(const struct gguf *g, const struct gguf_kv *kv, bool *neg, uint64_t *mag) {
    const uint8_t *p = g->map + kv->val;
    int64_t s;
    *neg = false;
    switch (kv->type) {
    case GGUF_T_UINT8: *mag = p[0]; return true;
    case GGUF_T_UINT16: *mag = (uint64_t)p[0] | (uint64_t)p[1] << 8; return true;
    case GGUF_T_UINT32: *mag = le32(p); return true;
    case GGUF_T_UINT64: *mag = le64(p); return true;
    case GGUF_T_INT8: s = (int8_t)p[0]; break;
    case GGUF_T_INT16: s = (int16_t)(uint16_t)((unsigned)p[0] | (unsigned)p[1] << 8); break;
    case GGUF_T_INT32: s = (int32_t)le32(p); break;
    case GGUF_T_INT64: s = (int64_t)le64(p); break;
    default: return false;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return true;
}

int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    bool neg;
    uint64_t m;
    if (!kv_int(g, kv, &neg, &m) || neg || m > UINT32_MAX) return -2;
    *out = (uint32_t)m;
    return 0;
}

int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    bool neg;
    uint64_t m;
    if (!kv_int(g, kv, &neg, &m)) return -2;
    if (!neg && m > (uint64_t)INT64_MAX) return -2;
    *out = neg ? (m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    return 0;
}

int gguf_get_f32(const struct gguf *g, const char *key, float *out) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    const uint8_t *p = g->map + kv->val;
    if (kv->type == GGUF_T_FLOAT32) {
        uint32_t b = le32(p);
        memcpy(out, &b, 4);
        return 0;
    }
    if (kv->type == GGUF_T_FLOAT64) {
        uint64_t b = le64(p);
        double d;
        memcpy(&d, &b, 8);
        *out = (float)d;
        return 0;
    }
    return -2;
}

int gguf_get_bool(const struct gguf *g, const char *key, int *out) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_T_BOOL) return -2;
    *out = g->map[kv->val] != 0;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, const char **s, size_t *len) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_T_STRING) return -2;
    *len = (size_t)le64(g->map + kv->val);
    *s = (const char *)g->map + kv->val + 8;
    return 0;
}

int gguf_get_arr(const struct gguf *g, const char *key, int *elem_type, uint64_t *n, const void **data) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_T_ARRAY) return -2;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    if (data) *data = vtype_size(kv->elem_type) ? (const void *)(g->map + kv->arr_data) : NULL;
    return 0;
}

int gguf_get_arr_str(const struct gguf *g, const char *key, uint64_t i, const char **s, size_t *len) {
    const struct gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_T_ARRAY || kv->elem_type != GGUF_T_STRING || i >= kv->n) return -2;
    size_t at = (size_t)kv->str_off[i];
    *len = (size_t)le64(g->map + at);
    *s = (const char *)g->map + at + 8;
    return 0;
}

// ---- tensors and iteration --------------------------------------------------------------------------------

int64_t gguf_n_tensors(const struct gguf *g) { return g->n_tensors; }

const struct gguf_tensor_info *gguf_tensor(const struct gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct gguf_tensor_info *gguf_find_tensor(const struct gguf *g, const char *name) {
    int64_t i = hash_find(g->t_hash, g->t_hash_cap, name, t_name, g);
    return i < 0 ? NULL : &g->tensors[i];
}

int64_t gguf_n_kv(const struct gguf *g) { return g->n_kv; }

const char *gguf_kv_key(const struct gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL; }

int gguf_kv_type(const struct gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kv[i].type : -1; }
