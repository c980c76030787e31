// kernels/kn_cuda_ops.h — C entry points of the CUDA kernels (kernels/*.cu) used by kernels/kn_cuda.c; no CUDA types.
// Every launcher queues work on `stream` (a cudaStream_t passed as void *) and returns 0 or a cudaError_t code.
// All pointers are device memory unless a comment says otherwise.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KN_CUDA_MAX_HEAD_DIM 256 // attention and KIVI kernels handle head_dim up to this
#define KN_CUDA_GEMV_MAX_TOK 8   // matmul with at most this many tokens reads the quantised weights directly

// ---- weights on the device ----------------------------------------------------------------------------
// GGUF blocks are stored as they are, except that 2-byte aligned block types get 2 bytes of padding so that
// every block starts 4-byte aligned: Q4_0 (18 -> 20), Q5_0 (22 -> 24), Q8_0 (34 -> 36) get it in front (the
// quants then start 4-byte aligned too), Q6_K (210 -> 212) at the end.
static inline size_t kn_cuda_block_bytes(int type) {
    switch (type) {
    case KN_Q4_0: return 20;
    case KN_Q5_0: return 24;
    case KN_Q8_0: return 36;
    case KN_Q6_K: return 212;
    default: return kn_type_block_bytes(type);
    }
}
static inline size_t kn_cuda_block_front_pad(int type) {
    return type == KN_Q4_0 || type == KN_Q5_0 || type == KN_Q8_0 ? 2 : 0;
}
static inline size_t kn_cuda_row_bytes(int type, int64_t n_cols) {
    int bs = kn_type_block_size(type);
    return bs ? (size_t)(n_cols / bs) * kn_cuda_block_bytes(type) : 0;
}

// y(n_tok, N) = x(n_tok, K) · W(N, K)^T straight from W's device blocks, fp32 accumulation; n_tok <= 8.
// legacy: float types use the 32-value segment kernel instead of the coalesced one (for comparisons).
int kn_cuda_gemv(void *stream, float *y, const void *w, int type, int64_t N, int64_t K, const float *x, int n_tok,
                 int legacy);

// Up to KN_CUDA_GEMV_MAX_MATS matrices of one type and row length K applied to the same x(n_tok, K) in one launch:
// y[m](n_tok, n[m]) = x · W[m]^T. With glu >= 0 (an enum kn_act) there are two matrices of equal n (gate, up) and
// y[0] = act(x · W[0]^T) * (x · W[1]^T), y[1] = x · W[1]^T (what matmul, matmul, glu(y[0], y[0], y[1]) leave).
#define KN_CUDA_GEMV_MAX_MATS 3
struct kn_cuda_gemv_set {
    const void *w[KN_CUDA_GEMV_MAX_MATS];
    float *y[KN_CUDA_GEMV_MAX_MATS];
    int64_t n[KN_CUDA_GEMV_MAX_MATS]; // rows of each matrix
    int n_mat;                        // 1 .. KN_CUDA_GEMV_MAX_MATS
    int glu;                          // -1, or the activation of the fused gate/up pair
};
int kn_cuda_gemv_multi(void *stream, const struct kn_cuda_gemv_set *set, int type, int64_t K, const float *x,
                       int n_tok, int legacy);
// out(n_rows, K) = dequantised rows of W (device blocks), as fp32 (half_out == 0) or fp16 (half_out == 1).
int kn_cuda_dequant(void *stream, void *out, int half_out, const void *w, int type, int64_t n_rows, int64_t K);
// out(n) fp16 = x(n) fp32, round to nearest even.
int kn_cuda_to_half(void *stream, void *out, const float *x, size_t n);
// y(n, K) = rows ids(n) of W(n_rows_w, K); ids are checked by the caller.
int kn_cuda_get_rows(void *stream, float *y, const void *w, int type, int64_t K, const int32_t *ids, int n);

// ---- elementwise ---------------------------------------------------------------------------------------
// y(n_rows, dim) = x / sqrt(mean(x^2) + eps) * w(dim); y may equal x.
int kn_cuda_rmsnorm(void *stream, float *y, const float *x, const float *w, int n_rows, int dim, float eps);
// x(n_rows, dim) += r(n_rows, dim), then y = rmsnorm(x) * w: bit for bit what kn_cuda_add then kn_cuda_rmsnorm
// give. y may equal x or r.
int kn_cuda_add_rmsnorm(void *stream, float *y, float *x, const float *r, const float *w, int n_rows, int dim,
                        float eps);
// x(n_tok, n_head, head_dim): rotate the first n_rot dims of every head by pos(n_tok) (angles in double).
int kn_cuda_rope(void *stream, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim, int n_rot,
                 float freq_base, float freq_scale, int mode);
// The same rotation of two tensors with the same positions in one launch: x1(n_tok, n_head1, head_dim) and
// x2(n_tok, n_head2, head_dim) (queries and keys).
int kn_cuda_rope2(void *stream, float *x1, int n_head1, float *x2, int n_head2, const int32_t *pos, int n_tok,
                  int head_dim, int n_rot, float freq_base, float freq_scale, int mode);
int kn_cuda_add(void *stream, float *y, const float *x, size_t n);     // y(n) += x(n)
int kn_cuda_scale(void *stream, float *y, float s, size_t n);          // y(n) *= s
// y(n) = act(gate(n)) * up(n); y may alias gate or up.
int kn_cuda_glu(void *stream, float *y, const float *gate, const float *up, size_t n, int act);
// *out = index of the first maximum of x(n).
int kn_cuda_argmax(void *stream, int32_t *out, const float *x, int n);

// ---- KV cache writes -----------------------------------------------------------------------------------
// k, v: (n_tok, n_head_kv, D) fp32 -> fp16 slots dst(n_tok * n_head_kv) (device copy of the slot array);
// pos(n_tok).
int kn_cuda_kv_store(void *stream, const struct kv_slot *dst, const float *k, const float *v, const int32_t *pos,
                     int n_tok, int n_head_kv, int D);

// Ordered cache commands (kv_move, KIVI jobs, small memsets and uploads) run as chains: the commands of one
// chain run in order on one thread block; commands of different chains touch disjoint memory.
enum kn_cuda_cmd_kind {
    KN_CMD_MEMSET = 1, // zero nbytes at dst
    KN_CMD_UPLOAD,     // copy nbytes (<= 16) of data to dst
    KN_CMD_MOVE,       // fp slot slots[slot0] -> slots[slot0 + 1] (pos, k, v), head_dim D
    KN_CMD_QVALUE,     // KV_QJOB_VALUE: slots[slot0] -> group dst, slot t
    KN_CMD_QKEYS,      // KV_QJOB_KEYS: slots[slot0 .. slot0 + n_src) -> group dst
    KN_CMD_QCOPYV,     // KV_QJOB_COPY_V: token t_src of group src -> slot t of group dst
};
struct kn_cuda_cmd {
    int32_t kind;
    int32_t t, n_src, t_src;
    int32_t D, G, B, VG; // packed format (D alone for MOVE)
    int32_t slot0;       // first entry in the chain's slot table
    uint32_t nbytes;     // MEMSET / UPLOAD
    void *dst;           // destination group / memory
    const void *src;     // source group (QCOPYV)
    unsigned char data[16];
};
// cmds(n_cmd), order(n_cmd) = command indices chain by chain, chain_start(n_chains + 1) offsets into order,
// slots: the kv_slot table the commands index.
int kn_cuda_cmd_run(void *stream, const struct kn_cuda_cmd *cmds, const int32_t *order, const int32_t *chain_start,
                    int n_chains, const struct kv_slot *slots);

// ---- attention -----------------------------------------------------------------------------------------
struct kn_cuda_attn_head {
    int32_t n_fp, n_q;     // fp slots, packed groups
    int32_t fp_off, q_off; // first fp block pointer / packed group pointer in the pointer table
};
struct kn_cuda_attn_params {
    float *out;             // (n_tok, n_head, D)
    const float *q;         // (n_tok, n_head, D)
    const int32_t *q_pos;   // (n_tok)
    int n_tok, n_head, n_head_kv, D;
    float scale;
    int bits, group, window; // packed format (bits 0: none), sliding window (0: none)
    const struct kn_cuda_attn_head *heads; // (n_head_kv)
    void *const *ptrs;      // block pointer table
    float *probs;           // optional (n_head, n_tok, probs_stride)
    int probs_stride;
    float *part;            // split partials (n_tok * n_head, n_split, D + 2); unused when n_split == 1 and no probs
    int n_split, chunks_per_split; // chunk = one fp block or one packed group
    int rows_per_warp;      // 1, 2, 4 or 8 (query rows of one KV head handled together)
    // decode kernel only (kn_cuda_attention_decode)
    int chunks_per_warp;    // chunks each warp of a split handles (a split covers KN_CUDA_DEC_WARPS * this)
    int fuse_combine;       // the last block of each (KV head, row block) merges the splits (no probs)
    int32_t *counters;      // (n_head_kv * row blocks) zeroed ints, when fuse_combine; left zeroed
    int smem_optin;         // the device's opt-in shared memory per block (bytes)
};
// Query rows one warp handles for n_tok tokens of group_heads query heads per KV head (1, 2, 4 or 8); the
// caller sizes n_split from the resulting number of warps.
int kn_cuda_attention_rows_per_warp(int n_tok, int group_heads);
int kn_cuda_attention(void *stream, const struct kn_cuda_attn_params *p);

// Decode attention (flash-decoding): a block of KN_CUDA_DEC_WARPS warps per (split, row block, KV head); a split
// is a contiguous range of chunks, each warp takes whole chunks with all of a chunk's loads in flight; the
// query rows of a row block (rows_per_warp of them) share every K/V load. Splits write (o, max, sum) partials
// that the last block of the head merges (fuse_combine) or a combine kernel merges (and normalises the probs).
#define KN_CUDA_DEC_WARPS 8
#define KN_CUDA_DEC_MAX_TOK 8        // the decode kernel serves batches of at most this many queries
#define KN_CUDA_DEC_FUSE_SPLITS 32   // fuse_combine needs n_split <= this
// Dynamic shared memory of the decode kernel for this shape (0: the shape is not supported: head_dim not one of
// 8, 16, 32, 64, 128, 256, or packed value groups not a multiple of 8 channels).
size_t kn_cuda_attention_decode_smem(int rows_per_warp, int D, int bits, int group);
int kn_cuda_attention_decode(void *stream, const struct kn_cuda_attn_params *p);

#ifdef __cplusplus
}
#endif
