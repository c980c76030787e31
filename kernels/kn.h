// kernels/kn.h — the compute backend interface: one table of operations, a CPU and a CUDA implementation.
// No CUDA types appear here. "Backend memory" is host memory on the CPU backend and device memory on CUDA:
// callers never dereference it; they move data with kn_upload / kn_download.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn_types.h"
#include "kvcache/kv_layout.h"

struct kn_backend;

// A weight matrix (or vector: n_rows == 1) of GGML type `type`, rows of n_cols values, row-major.
struct kn_tensor {
    int type;         // enum kn_type
    int64_t n_cols;   // values per row (GGUF ne[0])
    int64_t n_rows;   // rows (product of the other dims)
    size_t nbytes;
    void *data;       // backend memory after kn_tensor_load (CPU: points at the mmapped file)
    void *priv;       // backend-private (e.g. a converted device copy)
};

enum kn_mem_tag { KN_MEM_WEIGHTS, KN_MEM_KV, KN_MEM_SCRATCH, KN_MEM_TAGS };

struct kn_mem {
    uint64_t ours[KN_MEM_TAGS]; // bytes currently allocated through this backend, per tag
    uint64_t ours_peak;         // peak of the sum
    uint64_t dev_used;          // device-wide used bytes (cudaMemGetInfo); 0 on the CPU
    uint64_t dev_total;         // device total; 0 on the CPU
};

enum kn_act { KN_ACT_SILU, KN_ACT_GELU_TANH };

enum kn_rope_mode {
    KN_ROPE_NORM = 0, // rotate adjacent pairs (x[2i], x[2i+1]) — GGUF llama, llama2.c
    KN_ROPE_NEOX = 2, // rotate (x[i], x[i + n_rot/2]) — gemma3
};

// Attention of a batch of queries over one layer's cache (which already holds this batch's keys).
struct kn_attn_args {
    float *out;                         // (n_tok, n_head, head_dim) backend memory
    const float *q;                     // (n_tok, n_head, head_dim) backend memory, RoPE applied
    const int32_t *q_pos;               // (n_tok) host: position of each query
    int n_tok, n_head;                  // n_head query heads; group = n_head / kv->n_head_kv
    float scale;                        // logit scale (1/sqrt(head_dim) usually)
    const struct kv_layer_view *kv;     // host struct; block pointers are backend memory
    float *probs;                       // optional backend memory (n_head, n_tok, probs_stride)
    int probs_stride;                   // >= kv->max_slots when probs != NULL
};

// Where one token of one KV head lives in the fp region.
struct kv_slot {
    void *block; // fp block (backend memory)
    int32_t slot; // 0..KV_FP_BLOCK-1
};

// A KIVI quantisation job (see kvcache/kv_layout.h for the packed format).
enum kv_qjob_kind {
    KV_QJOB_VALUE,  // quantise the value of fp slot `src[0]` into group slot `t`; write the dequantised
                    // value back into the fp slot (so attention sees exactly what the codes hold)
    KV_QJOB_KEYS,   // quantise the keys of the n_src fp slots `src[]` per channel into group slots 0..n_src-1
                    // (and set pos_base/pos_off/live for them); write dequantised keys back into the fp slots
    KV_QJOB_COPY_V, // copy token `t_src` of group `src_group` (value codes, scales, pos) into slot `t`
};
struct kv_qjob {
    int kind;
    void *group;            // destination packed group (backend memory)
    int t;                  // destination slot in the group
    int n_src;
    const struct kv_slot *src; // host array of n_src fp slots
    const void *src_group;  // for COPY_V
    int t_src;
};

struct kn_ops {
    const char *name;
    void (*free)(struct kn_backend *be);
    void *(*alloc)(struct kn_backend *be, size_t nbytes, int tag);   // NULL on failure
    void (*dealloc)(struct kn_backend *be, void *p);
    int (*upload)(struct kn_backend *be, void *dst, const void *src, size_t nbytes);
    int (*download)(struct kn_backend *be, void *dst, const void *src, size_t nbytes);
    int (*memset0)(struct kn_backend *be, void *dst, size_t nbytes);
    int (*tensor_load)(struct kn_backend *be, struct kn_tensor *t, const void *host_data);
    void (*tensor_unload)(struct kn_backend *be, struct kn_tensor *t);
    void (*mem_info)(struct kn_backend *be, struct kn_mem *m);
    int (*sync)(struct kn_backend *be);  // wait for queued work; returns 0 or a negative error

    // y(n_tok, n_rows) = x(n_tok, n_cols) · W^T, computed on W's own type
    void (*matmul)(struct kn_backend *be, float *y, const struct kn_tensor *w, const float *x, int n_tok);
    // y(n, n_cols) = rows ids[] of W, dequantised; ids is a host array
    void (*get_rows)(struct kn_backend *be, float *y, const struct kn_tensor *w, const int32_t *ids, int n);
    // y(n_rows, dim) = x / rms(x) * w (w: F32 tensor of dim values); y may equal x
    void (*rmsnorm)(struct kn_backend *be, float *y, const float *x, const struct kn_tensor *w, int n_rows,
                    int dim, float eps);
    // rotate the first n_rot dims of each head of x(n_tok, n_head, head_dim); pos is a host array
    void (*rope)(struct kn_backend *be, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim,
                 int n_rot, float freq_base, float freq_scale, int mode);
    void (*add)(struct kn_backend *be, float *y, const float *x, size_t n);            // y += x
    void (*scale)(struct kn_backend *be, float *y, float s, size_t n);                 // y *= s
    void (*glu)(struct kn_backend *be, float *y, const float *gate, const float *up, size_t n, int act);
    void (*attention)(struct kn_backend *be, const struct kn_attn_args *a);
    // copy K and V rows (n_tok, n_head_kv, D) into fp slots dst[(tok * n_head_kv + h)], with positions
    void (*kv_store)(struct kn_backend *be, const struct kv_slot *dst, const float *k, const float *v,
                     const int32_t *pos, int n_tok, int n_head_kv, int D);
    // copy fp slots (pos, k, v) src[i] -> dst[i], in order (a later move may read an earlier destination)
    void (*kv_move)(struct kn_backend *be, const struct kv_slot *src, const struct kv_slot *dst, int n, int D);
    // run KIVI jobs in order
    void (*kv_quant)(struct kn_backend *be, const struct kv_qjob *jobs, int n, struct kv_qfmt fmt);
    // greedy pick: index of the max of x(n) (backend memory), result on the host
    int (*argmax)(struct kn_backend *be, const float *x, int n);
    const char *(*last_error)(struct kn_backend *be);
};

struct kn_backend {
    const struct kn_ops *ops;
};

// Constructors: NULL with a one-line reason in err on failure.
struct kn_backend *kn_cpu_init(int n_threads, char *err, size_t errlen);
struct kn_backend *kn_cuda_init(int device, char *err, size_t errlen);
int kn_cuda_device_count(void); // 0 when built without CUDA or no device is present
int kn_cpu_n_threads(const struct kn_backend *be);
// CPU backend: matmuls on quantised weights with activations quantised to int8 per 32 values (on = 1, the
// app's default; --exact-matmul turns it off) or fp32 activations (0, the backend's default: exact up to fp32
// rounding). With int8 on, decode calls (n_tok < 8) always use it, batches (prefill) where kn_cpu_int8_batch().
void kn_cpu_set_int8_act(struct kn_backend *be, int on);
// 1 when this build has the int8 batch GEMM (compiled for AVX-512 VNNI), 0 when batches keep fp32 activations.
int kn_cpu_int8_batch(void);

static inline void kn_free(struct kn_backend *be) {
    if (be) be->ops->free(be);
}
static inline int kn_is_cpu(const struct kn_backend *be) { return be->ops->name[0] == 'c' && be->ops->name[1] == 'p'; }
