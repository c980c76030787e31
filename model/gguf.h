// model/gguf.h — read-only GGUF (v2/v3) reader over an mmap, and a small writer for fixtures and benchmarks.
// Every size, count and offset read from a file is validated; errors come back as one line of text.
#pragma once
#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3, GGUF_T_UINT32 = 4,
    GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7, GGUF_T_STRING = 8, GGUF_T_ARRAY = 9,
    GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11, GGUF_T_FLOAT64 = 12,
};

struct gguf_tensor_info {
    const char *name;   // NUL-terminated copy
    int type;           // enum kn_type
    int n_dims;         // 1..4
    int64_t ne[4];      // ne[0] is the contiguous dimension; unused dims are 1
    uint64_t offset;    // from the start of the data section
    size_t nbytes;
    const void *data;   // inside the mapping
};

struct gguf;

// Opens and validates a GGUF file. NULL on failure with a one-line reason in err
// (e.g. "model.gguf: not a GGUF file (bad magic)").
struct gguf *gguf_open(const char *path, char *err, size_t errlen);
void gguf_close(struct gguf *g);

int gguf_version(const struct gguf *g);
size_t gguf_file_size(const struct gguf *g);

// Metadata lookups: 0 on success, -1 when the key is absent, -2 when its type does not fit.
// Integer getters accept any integer type whose value fits; gguf_get_f32 accepts FLOAT32/FLOAT64.
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_bool(const struct gguf *g, const char *key, int *out);
// String value (not NUL-terminated inside the mapping): pointer and length.
int gguf_get_str(const struct gguf *g, const char *key, const char **s, size_t *len);
// Array metadata: element type and count. For numeric arrays *data points at the packed little-endian
// elements inside the mapping (possibly unaligned: copy them out with memcpy); NULL for string/nested arrays.
int gguf_get_arr(const struct gguf *g, const char *key, int *elem_type, uint64_t *n, const void **data);
// Element i of a string array.
int gguf_get_arr_str(const struct gguf *g, const char *key, uint64_t i, const char **s, size_t *len);

int64_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor_info *gguf_tensor(const struct gguf *g, int64_t i);
const struct gguf_tensor_info *gguf_find_tensor(const struct gguf *g, const char *name);

// Iterate metadata keys (for `kvchat` diagnostics): key name and value type of entry i.
int64_t gguf_n_kv(const struct gguf *g);
const char *gguf_kv_key(const struct gguf *g, int64_t i);
int gguf_kv_type(const struct gguf *g, int64_t i);

// ---- Writer (used by tests' fixtures and benchmark model generation) ----------------------------
struct gguf_writer;
struct gguf_writer *gguf_writer_init(void);
void gguf_writer_free(struct gguf_writer *w);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(struct gguf_writer *w, const char *key, float v);
void gguf_w_bool(struct gguf_writer *w, const char *key, int v);
void gguf_w_str(struct gguf_writer *w, const char *key, const char *v);
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n);
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
// Adds a tensor of `type` from fp32 values (quantised by kn_quantize_row); ne[0] contiguous.
int gguf_w_tensor_f32(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const float *values);
// Adds a tensor from already-encoded bytes of `type`.
int gguf_w_tensor_raw(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const void *bytes, size_t nbytes);
// Adds a tensor of `type` whose rows are produced while gguf_writer_save writes the file, so a multi-GB
// model never sits in memory: fill(ctx, row, dst) writes the ne[0] fp32 values of row `row` into dst. fill
// may run on several threads at once (for different rows), so it must not depend on call order; ctx must
// stay valid until save returns. 0 ok, -1 bad arguments.
int gguf_w_tensor_gen(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                      void (*fill)(void *ctx, int64_t row, float *dst), void *ctx);
// Writes the file (version 3, alignment 32). 0 on success, -1 with err.
int gguf_writer_save(struct gguf_writer *w, const char *path, char *err, size_t errlen);
