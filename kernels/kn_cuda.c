// kernels/kn_cuda.c — the CUDA backend: device, stream, cuBLAS, counted device allocations, pinned staging of
// the small per-call host arrays, the ordered KV command queue, launch fusion (one held-back op, struct kn_pend),
// and the op table over kernels/*.cu launchers.
//
// CUDA graphs are not used for the decode step: every step changes what the launches read on the host side
// (block tables and positions staged per layer, KIVI command chains whose length varies, attention grids that
// grow with the context), so a captured graph would need re-capture or per-node parameter updates each step,
// which costs about what the launches it replaces cost; fusion cuts the launches instead.
#include "kernels/kn.h"

#include <stdio.h>

#ifdef KN_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kn_cuda_ops.h"
#include "kvcache/kv_quant_math.h"

#define KN_STAGE_BYTES (32u << 20)     // pinned staging of per-call host arrays (and its device mirror)
#define KN_DL_BYTES (4u << 20)         // pinned bounce buffer for downloads (grown up to KN_DL_MAX)
#define KN_DL_MAX (64u << 20)
#define KN_UPLOAD_STAGED (4u << 20)    // uploads up to this size go through pinned memory, asynchronously
#define KN_MM_SCRATCH_MAX (64u << 20)  // dequantised weight tile for cuBLAS prefill
#define KN_QUEUE_MAX 65536             // queued KV commands before a forced flush
#define KN_QUEUE_MEMSET_MAX (64u << 10) // memset0 sizes queued (larger ones run at once)
#define KN_POS_CACHE 4096               // positions arrays up to this length are uploaded once per epoch

enum kn_gemm_mode { KN_GEMM_F32, KN_GEMM_TF32, KN_GEMM_F16 };

// KVCHAT_CUDA_PROF=1: every op waits for the GPU and its time is summed per op kind (printed at free).
enum kn_prof_op {
    PR_GEMV, PR_GEMM, PR_GET_ROWS, PR_RMSNORM, PR_ROPE, PR_ADD, PR_SCALE, PR_GLU, PR_ATTN, PR_KV_STORE,
    PR_KV_CMDS, PR_UPLOAD, PR_DOWNLOAD, PR_MEMSET, PR_ARGMAX, PR_GEMV_FUSED, PR_ADD_NORM, PR_ROPE2, PR_GEMV_GLU, PR_N
};
static const char *const prof_names[PR_N] = {"matmul gemv", "matmul gemm", "get_rows", "rmsnorm", "rope",
                                             "add", "scale", "glu", "attention", "kv_store", "kv commands",
                                             "upload", "download", "memset0", "argmax", "gemv fused",
                                             "add+rmsnorm", "rope q+k", "gemv gate+up+glu"};
struct kn_prof {
    double host, total; // seconds in the call / until the GPU finished it
    uint64_t n;
};

struct amap_ent {
    uintptr_t key; // 0: empty
    uint64_t size;
    int tag;
};

struct ivl {
    uintptr_t lo, hi;
    int32_t cmd;
};

// Launch fusion (KVCHAT_CUDA_FUSE=0 turns it off): an op that a following op may absorb is held back as the
// pending op; the next op either fuses with it or launches it first (pre_op, q_push), so stream order is call
// order. Held back: add (absorbed by an rmsnorm of its sum), rope of up to KN_PEND_ROPE_TOK tokens (absorbed by
// a rope with the same positions and parameters: queries then keys) and decode GEMVs (absorbed by GEMVs of the
// same type, K and input: q/k/v, gate/up; a gate/up pair also absorbs the glu that follows it) and kv_store,
// whose staged slot table is not sent yet: the attention that follows sends its own tables with it, one copy
// instead of two.
enum { PEND_NONE, PEND_ADD, PEND_ROPE, PEND_GEMV, PEND_KV_STORE };
#define KN_PEND_ROPE_TOK 8
struct kn_pend {
    int kind;
    float *ay;          // add: ay(an) += ax(an)
    const float *ax;
    size_t an;
    float *rx;          // rope
    const int32_t *rpos_dev; // staged and sent
    int32_t rpos[KN_PEND_ROPE_TOK];
    int rn_tok, rn_head, rhd, rn_rot, rmode;
    float rbase, rscale;
    struct kn_cuda_gemv_set g; // gemv
    int gtype, gnt;
    int64_t gK;
    const float *gx;
    const struct kv_slot *kdst; // kv_store (staged, maybe not sent yet)
    const float *kk, *kv;
    const int32_t *kpos;        // staged
    int kn_tok, kn_head, kD;
};

struct kn_cuda {
    struct kn_backend base;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int n_sm;
    int gemm_mode;
    char dev_name[256];
    char err[512];
    int broken; // a sticky CUDA error happened: the context is unusable
    int gemv_legacy; // KVCHAT_CUDA_GEMV=legacy: float weights through the 32-value segment GEMV
    int prof;
    struct kn_prof pr[PR_N];

    // counted device allocations
    uint64_t ours[KN_MEM_TAGS];
    uint64_t peak;
    struct amap_ent *amap;
    size_t amap_cap, amap_n;

    // staging: host bytes [0, st_used) are staged; [0, st_sent) were queued for the device mirror
    unsigned char *st_host, *st_dev;
    size_t st_cap, st_used, st_sent;
    uint64_t st_epoch;
    int32_t pos_cache[KN_POS_CACHE];
    int pos_n;
    const int32_t *pos_dev;
    uint64_t pos_epoch;
    unsigned char *dl_host;
    size_t dl_cap;

    // KV command queue
    struct kn_cuda_cmd *q_cmds;
    size_t q_n, q_cap;
    struct kv_slot *q_slots;
    size_t q_ns, q_scap;
    struct ivl *ivl;
    size_t ivl_cap;
    int32_t *q_work; // 4 * q_cap + 1 ints: parent, chain id, order, chain starts
    size_t q_work_cap;

    // device scratch
    void *mm_scratch;
    size_t mm_scratch_cap;
    void *x16;
    size_t x16_cap;
    float *x_align;
    size_t x_align_cap;
    float *att_part;
    size_t att_part_cap;
    int32_t *att_ctr; // zeroed counters of the decode attention's fused combine (kept zeroed by the kernel)
    size_t att_ctr_cap;
    int32_t *argmax_dev;
    int fuse;            // launch fusion on (default)
    struct kn_pend pend;
    int smem_optin;   // opt-in shared memory per block (bytes)
    int attn_legacy;  // KVCHAT_CUDA_ATTN=legacy: every attention through the original kernel
};

static struct kn_cuda *cu_of(struct kn_backend *be) { return (struct kn_cuda *)be; }

static void set_err(struct kn_cuda *cu, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void set_err(struct kn_cuda *cu, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cu->err, sizeof cu->err, fmt, ap);
    va_end(ap);
}

// Records a failed CUDA call; returns -1 (0 when e is cudaSuccess).
static int cuda_fail(struct kn_cuda *cu, const char *what, int e) {
    if (e == cudaSuccess) return 0;
    set_err(cu, "CUDA %s: %s", what, cudaGetErrorString((cudaError_t)e));
    cudaError_t sticky = cudaPeekAtLastError();
    if (sticky != cudaSuccess && sticky != cudaErrorMemoryAllocation && sticky != cudaErrorInvalidValue) cu->broken = 1;
    (void)cudaGetLastError();
    return -1;
}

static int blas_fail(struct kn_cuda *cu, const char *what, cublasStatus_t s) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    set_err(cu, "cuBLAS %s failed (status %d)", what, (int)s);
    return -1;
}

// ---- allocation map and counting ----------------------------------------------------------------------

// Fibonacci hashing on the high product bits: device pointers share many low zero bits.
static size_t amap_slot(uintptr_t key, size_t cap) {
    return (size_t)(((uint64_t)key * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static int amap_grow(struct kn_cuda *cu) {
    size_t cap = cu->amap_cap ? 2 * cu->amap_cap : 256;
    struct amap_ent *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < cu->amap_cap; i++) {
        if (!cu->amap[i].key) continue;
        size_t j = amap_slot(cu->amap[i].key, cap);
        while (t[j].key) j = (j + 1) & (cap - 1);
        t[j] = cu->amap[i];
    }
    free(cu->amap);
    cu->amap = t;
    cu->amap_cap = cap;
    return 0;
}

static int amap_put(struct kn_cuda *cu, void *p, uint64_t size, int tag) {
    if ((cu->amap_n + 1) * 2 > cu->amap_cap && amap_grow(cu)) return -1;
    size_t j = amap_slot((uintptr_t)p, cu->amap_cap);
    while (cu->amap[j].key) j = (j + 1) & (cu->amap_cap - 1);
    cu->amap[j].key = (uintptr_t)p;
    cu->amap[j].size = size;
    cu->amap[j].tag = tag;
    cu->amap_n++;
    return 0;
}

// Removes p from the map (backward-shift deletion); 0 and its entry, or -1 when p is unknown.
static int amap_take(struct kn_cuda *cu, void *p, struct amap_ent *out) {
    if (!cu->amap_cap) return -1;
    size_t mask = cu->amap_cap - 1, j = amap_slot((uintptr_t)p, cu->amap_cap);
    while (cu->amap[j].key && cu->amap[j].key != (uintptr_t)p) j = (j + 1) & mask;
    if (!cu->amap[j].key) return -1;
    *out = cu->amap[j];
    size_t hole = j;
    for (size_t k = (j + 1) & mask; cu->amap[k].key; k = (k + 1) & mask) {
        size_t want = amap_slot(cu->amap[k].key, cu->amap_cap);
        // move k into the hole when its home slot is not in (hole, k]
        int in_range = hole <= k ? (want > hole && want <= k) : (want > hole || want <= k);
        if (!in_range) {
            cu->amap[hole] = cu->amap[k];
            hole = k;
        }
    }
    cu->amap[hole].key = 0;
    cu->amap_n--;
    return 0;
}

static void count_add(struct kn_cuda *cu, int tag, uint64_t n) {
    cu->ours[tag] += n;
    uint64_t sum = 0;
    for (int i = 0; i < KN_MEM_TAGS; i++) sum += cu->ours[i];
    if (sum > cu->peak) cu->peak = sum;
}
static void count_sub(struct kn_cuda *cu, int tag, uint64_t n) { cu->ours[tag] = cu->ours[tag] >= n ? cu->ours[tag] - n : 0; }

// A counted device allocation (NULL with last_error set on failure).
static void *dev_alloc(struct kn_cuda *cu, size_t nbytes, int tag) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, nbytes ? nbytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e == cudaErrorMemoryAllocation)
            set_err(cu, "CUDA out of memory allocating %.0f MiB", (double)nbytes / 1048576.0 + 0.499);
        else
            set_err(cu, "CUDA allocation of %zu bytes failed: %s", nbytes, cudaGetErrorString(e));
        return NULL;
    }
    if (amap_put(cu, p, nbytes, tag)) {
        cudaFree(p);
        set_err(cu, "out of host memory for the allocation map");
        return NULL;
    }
    count_add(cu, tag, nbytes);
    return p;
}

static void dev_free(struct kn_cuda *cu, void *p) {
    if (!p) return;
    struct amap_ent e;
    if (amap_take(cu, p, &e) == 0) count_sub(cu, e.tag, e.size);
    cudaError_t rc = cudaFree(p);
    if (rc != cudaSuccess) cuda_fail(cu, "free", rc);
}

// Grows a scratch buffer to at least n bytes (contents are not kept); 0 ok, -1 on failure.
static int scratch_reserve(struct kn_cuda *cu, void **buf, size_t *cap, size_t n) {
    if (*buf && *cap >= n) return 0;
    size_t want = n + n / 4;
    if (*buf) dev_free(cu, *buf);
    *buf = dev_alloc(cu, want, KN_MEM_SCRATCH);
    *cap = *buf ? want : 0;
    return *buf ? 0 : -1;
}

// ---- staging --------------------------------------------------------------------------------------------

static void stage_reset(struct kn_cuda *cu) {
    cu->st_used = cu->st_sent = 0;
    cu->st_epoch++;
}

static int stream_sync(struct kn_cuda *cu) {
    cudaError_t e = cudaStreamSynchronize(cu->stream);
    stage_reset(cu);
    return cuda_fail(cu, "stream synchronize", e);
}

static int pend_flush(struct kn_cuda *cu);

// Makes room for n staged bytes (in up to 8 arrays), waiting for queued work when the buffer is full.
static int stage_reserve(struct kn_cuda *cu, size_t n) {
    size_t need = n + 16 * 8;
    if (cu->st_used + need <= cu->st_cap) return 0;
    pend_flush(cu); // a pending op may read staged positions: launch it before the staging is reused
    if (stream_sync(cu)) return -1;
    if (need <= cu->st_cap) return 0;
    size_t cap = need > 2 * cu->st_cap ? need : 2 * cu->st_cap;
    unsigned char *h = NULL;
    if (cudaHostAlloc((void **)&h, cap, cudaHostAllocDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        set_err(cu, "CUDA: cannot pin %zu bytes of host memory for staging", cap);
        return -1;
    }
    void *d = dev_alloc(cu, cap, KN_MEM_SCRATCH);
    if (!d) {
        cudaFreeHost(h);
        return -1;
    }
    cudaFreeHost(cu->st_host);
    dev_free(cu, cu->st_dev);
    cu->st_host = h;
    cu->st_dev = d;
    cu->st_cap = cap;
    return 0;
}

// n bytes of staging (16-byte aligned): *host to fill now; the returned device address is valid once
// stage_send() has queued the copy, until the next synchronisation.
static void *stage_alloc(struct kn_cuda *cu, size_t n, void **host) {
    size_t off = (cu->st_used + 15) & ~(size_t)15;
    cu->st_used = off + n;
    *host = cu->st_host + off;
    return cu->st_dev + off;
}

static void *stage_put(struct kn_cuda *cu, const void *src, size_t n) {
    void *h;
    void *d = stage_alloc(cu, n, &h);
    if (n) memcpy(h, src, n);
    return d;
}

// Positions arrays repeat across the ops of a layer: stage one only when it differs from the last.
static const int32_t *stage_pos(struct kn_cuda *cu, const int32_t *pos, int n) {
    if (n <= KN_POS_CACHE && cu->pos_dev && cu->pos_epoch == cu->st_epoch && cu->pos_n == n &&
        memcmp(cu->pos_cache, pos, (size_t)n * 4) == 0)
        return cu->pos_dev;
    const int32_t *d = stage_put(cu, pos, (size_t)n * 4);
    if (n <= KN_POS_CACHE) {
        memcpy(cu->pos_cache, pos, (size_t)n * 4);
        cu->pos_n = n;
        cu->pos_dev = d;
        cu->pos_epoch = cu->st_epoch;
    }
    return d;
}

static int stage_send(struct kn_cuda *cu) {
    if (cu->st_used <= cu->st_sent) return 0;
    cudaError_t e = cudaMemcpyAsync(cu->st_dev + cu->st_sent, cu->st_host + cu->st_sent, cu->st_used - cu->st_sent,
                                    cudaMemcpyHostToDevice, cu->stream);
    cu->st_sent = cu->st_used;
    return cuda_fail(cu, "staging copy", e);
}

// ---- profiling ------------------------------------------------------------------------------------------

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double prof_t0(const struct kn_cuda *cu) { return cu->prof ? now_s() : 0.0; }
static void prof_end(struct kn_cuda *cu, int id, double t0) {
    if (!cu->prof) return;
    double t1 = now_s();
    cudaStreamSynchronize(cu->stream);
    stage_reset(cu);
    double t2 = now_s();
    cu->pr[id].host += t1 - t0;
    cu->pr[id].total += t2 - t0;
    cu->pr[id].n++;
}
static void prof_print(const struct kn_cuda *cu) {
    double sum = 0;
    for (int i = 0; i < PR_N; i++) sum += cu->pr[i].total;
    fprintf(stderr, "kvchat cuda profile (%s; each op waited for):\n%-14s %9s %12s %12s %7s\n", cu->dev_name, "op",
            "calls", "host us/call", "total us/call", "share");
    for (int i = 0; i < PR_N; i++) {
        const struct kn_prof *p = &cu->pr[i];
        if (!p->n) continue;
        fprintf(stderr, "%-14s %9llu %12.2f %12.2f %6.1f%%\n", prof_names[i], (unsigned long long)p->n,
                1e6 * p->host / (double)p->n, 1e6 * p->total / (double)p->n, sum > 0 ? 100.0 * p->total / sum : 0.0);
    }
}

// ---- KV command queue -------------------------------------------------------------------------------------

static int q_reserve(struct kn_cuda *cu, size_t n_cmd, size_t n_slot) {
    if (cu->q_n + n_cmd > cu->q_cap) {
        size_t cap = cu->q_cap ? 2 * cu->q_cap : 1024;
        while (cap < cu->q_n + n_cmd) cap *= 2;
        struct kn_cuda_cmd *c = realloc(cu->q_cmds, cap * sizeof *c);
        if (!c) return -1;
        cu->q_cmds = c;
        cu->q_cap = cap;
    }
    if (cu->q_ns + n_slot > cu->q_scap) {
        size_t cap = cu->q_scap ? 2 * cu->q_scap : 2048;
        while (cap < cu->q_ns + n_slot) cap *= 2;
        struct kv_slot *s = realloc(cu->q_slots, cap * sizeof *s);
        if (!s) return -1;
        cu->q_slots = s;
        cu->q_scap = cap;
    }
    return 0;
}

static int cmp_ivl(const void *a, const void *b) {
    const struct ivl *x = a, *y = b;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return (x->cmd > y->cmd) - (x->cmd < y->cmd);
}

static int32_t uf_find(int32_t *parent, int32_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static int ivl_push(struct kn_cuda *cu, size_t *n, const void *p, size_t bytes, int32_t cmd) {
    if (*n == cu->ivl_cap) {
        size_t cap = cu->ivl_cap ? 2 * cu->ivl_cap : 4096;
        struct ivl *v = realloc(cu->ivl, cap * sizeof *v);
        if (!v) return -1;
        cu->ivl = v;
        cu->ivl_cap = cap;
    }
    cu->ivl[*n].lo = (uintptr_t)p;
    cu->ivl[*n].hi = (uintptr_t)p + bytes;
    cu->ivl[*n].cmd = cmd;
    (*n)++;
    return 0;
}

enum { SLOT_POS = 1, SLOT_K = 2, SLOT_V = 4 };

// Intervals of the parts of an fp slot a command touches (position, key row, value row).
static int ivl_slot(struct kn_cuda *cu, size_t *n, struct kv_slot s, int D, int parts, int32_t cmd) {
    unsigned char *b = s.block;
    int rc = 0;
    if (parts & SLOT_POS) rc = rc || ivl_push(cu, n, b + kv_fp_off_pos() + (size_t)s.slot * 4, 4, cmd);
    if (parts & SLOT_K) rc = rc || ivl_push(cu, n, b + kv_fp_off_k(D) + (size_t)s.slot * D * 2, (size_t)D * 2, cmd);
    if (parts & SLOT_V) rc = rc || ivl_push(cu, n, b + kv_fp_off_v(D) + (size_t)s.slot * D * 2, (size_t)D * 2, cmd);
    return rc;
}

// Runs the queued commands: commands that touch overlapping memory (packed groups, memset ranges, the parts
// of fp slots they read or write) form one chain, kept in queue order; chains run in parallel in one launch.
static int q_flush(struct kn_cuda *cu) {
    if (!cu->q_n) return 0;
    const size_t n = cu->q_n;
    size_t n_ivl = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kn_cuda_cmd *c = &cu->q_cmds[i];
        const struct kv_slot *s = cu->q_slots + c->slot0;
        const int32_t ci = (int32_t)i;
        int rc = 0;
        switch (c->kind) {
        case KN_CMD_MEMSET:
        case KN_CMD_UPLOAD: rc = ivl_push(cu, &n_ivl, c->dst, c->nbytes, ci); break;
        case KN_CMD_MOVE:
            rc = ivl_slot(cu, &n_ivl, s[0], c->D, SLOT_POS | SLOT_K | SLOT_V, ci) ||
                 ivl_slot(cu, &n_ivl, s[1], c->D, SLOT_POS | SLOT_K | SLOT_V, ci);
            break;
        default: {
            size_t qb = kv_q_block_bytes(kv_qfmt_make(c->D, c->G, c->B));
            rc = ivl_push(cu, &n_ivl, c->dst, qb, ci);
            if (c->kind == KN_CMD_QVALUE) rc = rc || ivl_slot(cu, &n_ivl, s[0], c->D, SLOT_POS | SLOT_V, ci);
            if (c->kind == KN_CMD_QKEYS)
                for (int t = 0; t < c->n_src && !rc; t++) rc = ivl_slot(cu, &n_ivl, s[t], c->D, SLOT_POS | SLOT_K, ci);
            if (c->kind == KN_CMD_QCOPYV) rc = rc || ivl_push(cu, &n_ivl, c->src, qb, ci);
        } break;
        }
        if (rc) {
            set_err(cu, "out of host memory for the KV command queue");
            cu->q_n = cu->q_ns = 0;
            return -1;
        }
    }
    if (cu->q_work_cap < 4 * n + 1) {
        int32_t *w = realloc(cu->q_work, (4 * n + 1) * sizeof *w);
        if (!w) {
            set_err(cu, "out of host memory for the KV command queue");
            cu->q_n = cu->q_ns = 0;
            return -1;
        }
        cu->q_work = w;
        cu->q_work_cap = 4 * n + 1;
    }
    int32_t *parent = cu->q_work, *chain = parent + n, *order = chain + n, *start = order + n;
    for (size_t i = 0; i < n; i++) parent[i] = (int32_t)i;
    qsort(cu->ivl, n_ivl, sizeof *cu->ivl, cmp_ivl);
    uintptr_t hi = 0;
    int32_t rep = -1;
    for (size_t k = 0; k < n_ivl; k++) {
        const struct ivl *v = &cu->ivl[k];
        if (rep >= 0 && v->lo < hi) {
            int32_t a = uf_find(parent, rep), b = uf_find(parent, v->cmd);
            if (a != b) parent[a > b ? a : b] = a < b ? a : b;
            if (v->hi > hi) hi = v->hi;
        } else {
            rep = v->cmd;
            hi = v->hi;
        }
    }
    // chain ids in order of first command; counts; stable order
    int32_t n_chain = 0;
    for (size_t i = 0; i < n; i++) chain[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t r = uf_find(parent, (int32_t)i);
        if (chain[r] < 0) chain[r] = n_chain++;
        order[i] = chain[r]; // temporarily: chain of command i
    }
    for (int32_t c = 0; c <= n_chain; c++) start[c] = 0;
    for (size_t i = 0; i < n; i++) start[order[i] + 1]++;
    for (int32_t c = 0; c < n_chain; c++) start[c + 1] += start[c];
    // fill: reuse parent[] as the per-chain write cursor
    for (int32_t c = 0; c < n_chain; c++) parent[c] = start[c];
    for (size_t i = 0; i < n; i++) chain[parent[order[i]]++] = (int32_t)i;
    size_t bytes = n * sizeof(struct kn_cuda_cmd) + n * 4 + (size_t)(n_chain + 1) * 4 + cu->q_ns * sizeof(struct kv_slot);
    int rc = stage_reserve(cu, bytes);
    if (rc == 0) {
        const struct kn_cuda_cmd *d_cmds = stage_put(cu, cu->q_cmds, n * sizeof(struct kn_cuda_cmd));
        const int32_t *d_order = stage_put(cu, chain, n * 4);
        const int32_t *d_start = stage_put(cu, start, (size_t)(n_chain + 1) * 4);
        const struct kv_slot *d_slots = stage_put(cu, cu->q_slots, cu->q_ns * sizeof(struct kv_slot));
        rc = stage_send(cu);
        if (rc == 0) rc = cuda_fail(cu, "kv commands", kn_cuda_cmd_run(cu->stream, d_cmds, d_order, d_start, n_chain, d_slots));
    }
    cu->q_n = cu->q_ns = 0;
    return rc;
}

// Appends a command (and its n_slot slots); flushes when the queue is long.
static int q_push(struct kn_cuda *cu, struct kn_cuda_cmd *c, const struct kv_slot *slots, int n_slot) {
    pend_flush(cu);
    if (cu->q_n >= KN_QUEUE_MAX && q_flush(cu)) return -1;
    if (q_reserve(cu, 1, (size_t)n_slot)) {
        set_err(cu, "out of host memory for the KV command queue");
        return -1;
    }
    c->slot0 = (int32_t)cu->q_ns;
    if (n_slot) memcpy(cu->q_slots + cu->q_ns, slots, (size_t)n_slot * sizeof *slots);
    cu->q_ns += (size_t)n_slot;
    cu->q_cmds[cu->q_n++] = *c;
    return 0;
}

// Every op that is not a queued command starts here: the queue runs first, so stream order is call order.
static int pre_op(struct kn_cuda *cu) {
    pend_flush(cu);
    if (!cu->q_n) return 0;
    double t0 = prof_t0(cu);
    int rc = q_flush(cu);
    prof_end(cu, PR_KV_CMDS, t0);
    return rc;
}

// ---- memory ops ---------------------------------------------------------------------------------------------

static void *cuda_alloc(struct kn_backend *be, size_t nbytes, int tag) {
    struct kn_cuda *cu = cu_of(be);
    if (tag < 0 || tag >= KN_MEM_TAGS) {
        set_err(cu, "alloc: bad memory tag %d", tag);
        return NULL;
    }
    return dev_alloc(cu, nbytes, tag);
}

static void cuda_dealloc(struct kn_backend *be, void *p) {
    struct kn_cuda *cu = cu_of(be);
    if (!p) return;
    pre_op(cu); // queued commands may still touch p
    dev_free(cu, p);
}

static int cuda_upload(struct kn_backend *be, void *dst, const void *src, size_t nbytes) {
    struct kn_cuda *cu = cu_of(be);
    if (!nbytes) return 0;
    if (nbytes <= 16) {
        struct kn_cuda_cmd c;
        memset(&c, 0, sizeof c);
        c.kind = KN_CMD_UPLOAD;
        c.dst = dst;
        c.nbytes = (uint32_t)nbytes;
        memcpy(c.data, src, nbytes);
        return q_push(cu, &c, NULL, 0);
    }
    if (pre_op(cu)) return -1;
    if (nbytes <= KN_UPLOAD_STAGED) {
        const double t0 = prof_t0(cu);
        if (stage_reserve(cu, nbytes)) return -1;
        void *h;
        stage_alloc(cu, nbytes, &h);
        memcpy(h, src, nbytes);
        cu->st_sent = cu->st_used; // goes straight to dst, not to the staging mirror
        int rc = cuda_fail(cu, "upload", cudaMemcpyAsync(dst, h, nbytes, cudaMemcpyHostToDevice, cu->stream));
        prof_end(cu, PR_UPLOAD, t0);
        return rc;
    }
    if (cuda_fail(cu, "upload", cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, cu->stream))) return -1;
    return stream_sync(cu);
}

static int dl_reserve(struct kn_cuda *cu, size_t n) {
    if (n <= cu->dl_cap) return 0;
    size_t cap = cu->dl_cap ? cu->dl_cap : KN_DL_BYTES;
    while (cap < n) cap *= 2;
    unsigned char *h = NULL;
    if (cudaHostAlloc((void **)&h, cap, cudaHostAllocDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    if (cu->dl_host) cudaFreeHost(cu->dl_host);
    cu->dl_host = h;
    cu->dl_cap = cap;
    return 0;
}

static int cuda_download(struct kn_backend *be, void *dst, const void *src, size_t nbytes) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return -1;
    if (!nbytes) return 0;
    if (nbytes <= KN_DL_MAX && dl_reserve(cu, nbytes) == 0) {
        const double t0 = prof_t0(cu);
        if (cuda_fail(cu, "download", cudaMemcpyAsync(cu->dl_host, src, nbytes, cudaMemcpyDeviceToHost, cu->stream)))
            return -1;
        if (stream_sync(cu)) return -1;
        memcpy(dst, cu->dl_host, nbytes);
        prof_end(cu, PR_DOWNLOAD, t0);
        return 0;
    }
    if (cuda_fail(cu, "download", cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, cu->stream))) return -1;
    return stream_sync(cu);
}

static int cuda_memset0(struct kn_backend *be, void *dst, size_t nbytes) {
    struct kn_cuda *cu = cu_of(be);
    if (!nbytes) return 0;
    if (nbytes <= KN_QUEUE_MEMSET_MAX) {
        struct kn_cuda_cmd c;
        memset(&c, 0, sizeof c);
        c.kind = KN_CMD_MEMSET;
        c.dst = dst;
        c.nbytes = (uint32_t)nbytes;
        return q_push(cu, &c, NULL, 0);
    }
    if (pre_op(cu)) return -1;
    const double t0 = prof_t0(cu);
    int rc = cuda_fail(cu, "memset", cudaMemsetAsync(dst, 0, nbytes, cu->stream));
    prof_end(cu, PR_MEMSET, t0);
    return rc;
}

// Weights go to the device once, as GGUF blocks (2-byte aligned block types padded to 4, kn_cuda_ops.h).
static int cuda_tensor_load(struct kn_backend *be, struct kn_tensor *t, const void *host_data) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return -1;
    const int bs = kn_type_block_size(t->type);
    if (!bs) {
        set_err(cu, "tensor_load: unsupported type %d", t->type);
        return -1;
    }
    if (t->n_cols % bs != 0 || t->n_cols <= 0 || t->n_rows <= 0) {
        set_err(cu, "tensor_load: %lld columns is not a multiple of the block size", (long long)t->n_cols);
        return -1;
    }
    const size_t src_bb = kn_type_block_bytes(t->type), dev_bb = kn_cuda_block_bytes(t->type);
    const size_t n_blocks = (size_t)(t->n_cols / bs) * (size_t)t->n_rows;
    const size_t dev_bytes = n_blocks * dev_bb;
    unsigned char *d = dev_alloc(cu, dev_bytes, KN_MEM_WEIGHTS);
    if (!d) return -1;
    int rc = 0;
    if (src_bb == dev_bb) {
        rc = cuda_fail(cu, "weight upload", cudaMemcpyAsync(d, host_data, dev_bytes, cudaMemcpyHostToDevice, cu->stream));
    } else {
        // repack through the pinned staging buffer, a few MiB at a time
        const size_t pad = kn_cuda_block_front_pad(t->type);
        const size_t per = (8u << 20) / dev_bb;
        const unsigned char *src = host_data;
        for (size_t b0 = 0; b0 < n_blocks && rc == 0; b0 += per) {
            size_t nb = n_blocks - b0 < per ? n_blocks - b0 : per;
            if (stage_reserve(cu, nb * dev_bb)) {
                rc = -1;
                break;
            }
            void *hv;
            stage_alloc(cu, nb * dev_bb, &hv);
            unsigned char *h = hv;
            cu->st_sent = cu->st_used;
            for (size_t b = 0; b < nb; b++) {
                unsigned char *o = h + b * dev_bb;
                memset(o, 0, dev_bb);
                memcpy(o + pad, src + (b0 + b) * src_bb, src_bb);
            }
            rc = cuda_fail(cu, "weight upload",
                           cudaMemcpyAsync(d + b0 * dev_bb, h, nb * dev_bb, cudaMemcpyHostToDevice, cu->stream));
        }
    }
    if (rc == 0) rc = stream_sync(cu);
    if (rc) {
        dev_free(cu, d);
        return -1;
    }
    t->data = d;
    t->priv = NULL;
    return 0;
}

static void cuda_tensor_unload(struct kn_backend *be, struct kn_tensor *t) {
    struct kn_cuda *cu = cu_of(be);
    if (!t->data) return;
    pre_op(cu);
    dev_free(cu, t->data);
    t->data = NULL;
}

static void cuda_mem_info(struct kn_backend *be, struct kn_mem *m) {
    struct kn_cuda *cu = cu_of(be);
    memset(m, 0, sizeof *m);
    for (int i = 0; i < KN_MEM_TAGS; i++) m->ours[i] = cu->ours[i];
    m->ours_peak = cu->peak;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        m->dev_used = tot - fr;
        m->dev_total = tot;
    } else {
        (void)cudaGetLastError();
    }
}

static int cuda_sync(struct kn_backend *be) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return -1;
    if (stream_sync(cu)) return -1;
    return cuda_fail(cu, "kernel", cudaGetLastError());
}

static const char *cuda_last_error(struct kn_backend *be) { return cu_of(be)->err; }

// ---- compute ops --------------------------------------------------------------------------------------------

static int launch_rc(struct kn_cuda *cu, const char *what, int rc) { return cuda_fail(cu, what, rc); }

// Launches the pending op as it is (nothing fused with it); 0 or -1.
static int pend_flush(struct kn_cuda *cu) {
    struct kn_pend *pd = &cu->pend;
    const int kind = pd->kind;
    if (kind == PEND_NONE) return 0;
    pd->kind = PEND_NONE;
    const double t0 = prof_t0(cu);
    int rc = 0;
    switch (kind) {
    case PEND_ADD:
        rc = launch_rc(cu, "add", kn_cuda_add(cu->stream, pd->ay, pd->ax, pd->an));
        prof_end(cu, PR_ADD, t0);
        break;
    case PEND_ROPE:
        rc = launch_rc(cu, "rope",
                       kn_cuda_rope(cu->stream, pd->rx, pd->rpos_dev, pd->rn_tok, pd->rn_head, pd->rhd, pd->rn_rot,
                                    pd->rbase, pd->rscale, pd->rmode));
        prof_end(cu, PR_ROPE, t0);
        break;
    case PEND_GEMV:
        rc = launch_rc(cu, "gemv", kn_cuda_gemv_multi(cu->stream, &pd->g, pd->gtype, pd->gK, pd->gx, pd->gnt,
                                                      cu->gemv_legacy));
        prof_end(cu, pd->g.n_mat > 1 ? PR_GEMV_FUSED : PR_GEMV, t0);
        break;
    case PEND_KV_STORE:
        rc = stage_send(cu);
        if (rc == 0)
            rc = launch_rc(cu, "kv_store",
                           kn_cuda_kv_store(cu->stream, pd->kdst, pd->kk, pd->kv, pd->kpos, pd->kn_tok, pd->kn_head, pd->kD));
        prof_end(cu, PR_KV_STORE, t0);
        break;
    default: break;
    }
    return rc;
}

// Whether byte ranges [a, a + na) and [b, b + nb) overlap.
static int overlap(const void *a, size_t na, const void *b, size_t nb) {
    const uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + nb && b0 < a0 + na;
}

// Whether a decode GEMV y(n_tok, N) = x · W^T can join the pending GEMVs (same x, type, K; outputs disjoint
// from x and from each other).
static int gemv_joins(const struct kn_cuda *cu, const float *y, const struct kn_tensor *w, const float *x, int n_tok) {
    const struct kn_pend *pd = &cu->pend;
    if (pd->kind != PEND_GEMV || cu->q_n || pd->gx != x || pd->gnt != n_tok || pd->gtype != w->type ||
        pd->gK != w->n_cols || pd->g.n_mat >= KN_CUDA_GEMV_MAX_MATS)
        return 0;
    const size_t ny = (size_t)n_tok * (size_t)w->n_rows * sizeof(float);
    if (overlap(y, ny, x, (size_t)n_tok * (size_t)w->n_cols * sizeof(float))) return 0;
    for (int i = 0; i < pd->g.n_mat; i++)
        if (overlap(y, ny, pd->g.y[i], (size_t)n_tok * (size_t)pd->g.n[i] * sizeof(float))) return 0;
    return 1;
}

// y(n_tok, N) = x(n_tok, K) · W^T. Decode (n_tok <= 8): GEMV on the device blocks. Prefill: W dequantised
// tile by tile (fp32, or fp16 in KVCHAT_CUDA_GEMM=f16 mode) and multiplied by cuBLAS.
static void cuda_matmul(struct kn_backend *be, float *y, const struct kn_tensor *w, const float *x, int n_tok) {
    struct kn_cuda *cu = cu_of(be);
    const int64_t N = w->n_rows, K = w->n_cols;
    if (cu->fuse && n_tok > 0 && n_tok <= KN_CUDA_GEMV_MAX_TOK && N > 0 && (!((uintptr_t)x & 15) || K % 32 != 0) &&
        !overlap(y, (size_t)n_tok * (size_t)N * sizeof(float), x, (size_t)n_tok * (size_t)K * sizeof(float))) {
        struct kn_pend *pd = &cu->pend;
        if (gemv_joins(cu, y, w, x, n_tok)) {
            const int i = pd->g.n_mat++;
            pd->g.w[i] = w->data;
            pd->g.y[i] = y;
            pd->g.n[i] = N;
            return;
        }
        if (pre_op(cu)) return;
        memset(&pd->g, 0, sizeof pd->g);
        pd->g.w[0] = w->data;
        pd->g.y[0] = y;
        pd->g.n[0] = N;
        pd->g.n_mat = 1;
        pd->g.glu = -1;
        pd->gtype = w->type;
        pd->gK = K;
        pd->gx = x;
        pd->gnt = n_tok;
        pd->kind = PEND_GEMV;
        return;
    }
    if (pre_op(cu) || n_tok <= 0) return;
    if (((uintptr_t)x & 15) && K % 32 == 0) { // the vector loads need 16-byte aligned activations
        size_t nb = (size_t)n_tok * K * sizeof(float);
        if (scratch_reserve(cu, (void **)&cu->x_align, &cu->x_align_cap, nb)) return;
        if (cuda_fail(cu, "matmul copy", cudaMemcpyAsync(cu->x_align, x, nb, cudaMemcpyDeviceToDevice, cu->stream)))
            return;
        x = cu->x_align;
    }
    const double t0 = prof_t0(cu);
    if (n_tok <= KN_CUDA_GEMV_MAX_TOK) {
        launch_rc(cu, "gemv", kn_cuda_gemv(cu->stream, y, w->data, w->type, N, K, x, n_tok, cu->gemv_legacy));
        prof_end(cu, PR_GEMV, t0);
        return;
    }
    if (N > INT32_MAX || K > INT32_MAX) {
        set_err(cu, "matmul: %lld x %lld is too large for cuBLAS", (long long)N, (long long)K);
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    if (w->type == KN_F32 && cu->gemm_mode != KN_GEMM_F16) {
        blas_fail(cu, "sgemm", cublasSgemm(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, n_tok, (int)K, &one, w->data,
                                          (int)K, x, (int)K, &zero, y, (int)N));
        prof_end(cu, PR_GEMM, t0);
        return;
    }
    const int half = cu->gemm_mode == KN_GEMM_F16;
    const size_t esz = half ? 2 : 4;
    int64_t rows = (int64_t)(KN_MM_SCRATCH_MAX / ((size_t)K * esz));
    if (rows < 1) rows = 1;
    if (rows > N) rows = N;
    if (scratch_reserve(cu, &cu->mm_scratch, &cu->mm_scratch_cap, (size_t)rows * K * esz)) return;
    const void *xb = x;
    if (half) {
        if (scratch_reserve(cu, &cu->x16, &cu->x16_cap, (size_t)n_tok * K * 2)) return;
        if (launch_rc(cu, "to_half", kn_cuda_to_half(cu->stream, cu->x16, x, (size_t)n_tok * K))) return;
        xb = cu->x16;
    }
    const size_t rb = kn_cuda_row_bytes(w->type, K);
    for (int64_t r0 = 0; r0 < N; r0 += rows) {
        int64_t nr = N - r0 < rows ? N - r0 : rows;
        if (launch_rc(cu, "dequant",
                      kn_cuda_dequant(cu->stream, cu->mm_scratch, half, (const unsigned char *)w->data + (size_t)r0 * rb,
                                      w->type, nr, K)))
            return;
        cublasStatus_t s;
        if (half)
            s = cublasGemmEx(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, n_tok, (int)K, &one, cu->mm_scratch, CUDA_R_16F,
                             (int)K, xb, CUDA_R_16F, (int)K, &zero, y + r0, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT);
        else
            s = cublasSgemm(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, n_tok, (int)K, &one, cu->mm_scratch, (int)K, x,
                            (int)K, &zero, y + r0, (int)N);
        if (blas_fail(cu, "gemm", s)) return;
    }
    prof_end(cu, PR_GEMM, t0);
}

static void cuda_get_rows(struct kn_backend *be, float *y, const struct kn_tensor *w, const int32_t *ids, int n) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu) || n <= 0) return;
    const double t0 = prof_t0(cu);
    if (stage_reserve(cu, (size_t)n * 4)) return;
    void *hv;
    const int32_t *d_ids = stage_alloc(cu, (size_t)n * 4, &hv);
    int32_t *h = hv;
    int bad = -1;
    for (int i = 0; i < n; i++) {
        h[i] = ids[i];
        if (ids[i] < 0 || ids[i] >= w->n_rows) {
            if (bad < 0) bad = i;
            h[i] = 0;
        }
    }
    if (stage_send(cu)) return;
    launch_rc(cu, "get_rows", kn_cuda_get_rows(cu->stream, y, w->data, w->type, w->n_cols, d_ids, n));
    if (bad >= 0) {
        set_err(cu, "get_rows: row %d out of range (0..%lld)", ids[bad], (long long)w->n_rows - 1);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= w->n_rows)
                cudaMemsetAsync(y + (size_t)i * w->n_cols, 0, sizeof(float) * (size_t)w->n_cols, cu->stream);
    }
    prof_end(cu, PR_GET_ROWS, t0);
}

static void cuda_rmsnorm(struct kn_backend *be, float *y, const float *x, const struct kn_tensor *w, int n_rows, int dim,
                         float eps) {
    struct kn_cuda *cu = cu_of(be);
    struct kn_pend *pd = &cu->pend;
    if (pd->kind == PEND_ADD && !cu->q_n && x == pd->ay && n_rows > 0 && dim > 0 &&
        (size_t)n_rows * (size_t)dim == pd->an && w->type == KN_F32 && w->n_cols * w->n_rows >= dim &&
        (y == pd->ay || y == pd->ax ||
         (!overlap(y, pd->an * sizeof(float), pd->ay, pd->an * sizeof(float)) &&
          !overlap(y, pd->an * sizeof(float), pd->ax, pd->an * sizeof(float))))) {
        pd->kind = PEND_NONE;
        const double t0 = prof_t0(cu);
        launch_rc(cu, "add+rmsnorm", kn_cuda_add_rmsnorm(cu->stream, y, pd->ay, pd->ax, w->data, n_rows, dim, eps));
        prof_end(cu, PR_ADD_NORM, t0);
        return;
    }
    if (pre_op(cu)) return;
    if (w->type != KN_F32 || w->n_cols * w->n_rows < dim) {
        set_err(cu, "rmsnorm: weight must be F32 with %d values", dim);
        return;
    }
    const double t0 = prof_t0(cu);
    launch_rc(cu, "rmsnorm", kn_cuda_rmsnorm(cu->stream, y, x, w->data, n_rows, dim, eps));
    prof_end(cu, PR_RMSNORM, t0);
}

static void cuda_rope(struct kn_backend *be, float *x, const int32_t *pos, int n_tok, int n_head, int head_dim, int n_rot,
                      float freq_base, float freq_scale, int mode) {
    struct kn_cuda *cu = cu_of(be);
    struct kn_pend *pd = &cu->pend;
    if (pd->kind == PEND_ROPE && !cu->q_n && n_tok == pd->rn_tok && head_dim == pd->rhd && n_rot == pd->rn_rot &&
        mode == pd->rmode && freq_base == pd->rbase && freq_scale == pd->rscale && n_head > 0 &&
        memcmp(pos, pd->rpos, (size_t)n_tok * sizeof *pos) == 0 &&
        !overlap(x, (size_t)n_tok * n_head * head_dim * sizeof(float), pd->rx,
                 (size_t)n_tok * pd->rn_head * head_dim * sizeof(float))) {
        pd->kind = PEND_NONE;
        const double t0 = prof_t0(cu);
        launch_rc(cu, "rope", kn_cuda_rope2(cu->stream, pd->rx, pd->rn_head, x, n_head, pd->rpos_dev, n_tok, head_dim,
                                            n_rot, freq_base, freq_scale, mode));
        prof_end(cu, PR_ROPE2, t0);
        return;
    }
    if (pre_op(cu) || n_tok <= 0) return;
    if (n_rot > head_dim || n_rot % 2 || n_rot < 0) {
        set_err(cu, "rope: n_rot %d invalid for head_dim %d", n_rot, head_dim);
        return;
    }
    const double t0 = prof_t0(cu);
    if (stage_reserve(cu, (size_t)n_tok * 4)) return;
    const int32_t *d_pos = stage_pos(cu, pos, n_tok);
    if (stage_send(cu)) return;
    if (cu->fuse && n_tok <= KN_PEND_ROPE_TOK && n_head > 0) { // wait for the keys' rope
        pd->rx = x;
        pd->rpos_dev = d_pos;
        memcpy(pd->rpos, pos, (size_t)n_tok * sizeof *pos);
        pd->rn_tok = n_tok;
        pd->rn_head = n_head;
        pd->rhd = head_dim;
        pd->rn_rot = n_rot;
        pd->rmode = mode;
        pd->rbase = freq_base;
        pd->rscale = freq_scale;
        pd->kind = PEND_ROPE;
        return;
    }
    launch_rc(cu, "rope",
              kn_cuda_rope(cu->stream, x, d_pos, n_tok, n_head, head_dim, n_rot, freq_base, freq_scale, mode));
    prof_end(cu, PR_ROPE, t0);
}

static void cuda_add(struct kn_backend *be, float *y, const float *x, size_t n) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return;
    if (cu->fuse && n > 0) { // wait for an rmsnorm of the sum
        cu->pend.ay = y;
        cu->pend.ax = x;
        cu->pend.an = n;
        cu->pend.kind = PEND_ADD;
        return;
    }
    const double t0 = prof_t0(cu);
    launch_rc(cu, "add", kn_cuda_add(cu->stream, y, x, n));
    prof_end(cu, PR_ADD, t0);
}
static void cuda_scale(struct kn_backend *be, float *y, float s, size_t n) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return;
    const double t0 = prof_t0(cu);
    launch_rc(cu, "scale", kn_cuda_scale(cu->stream, y, s, n));
    prof_end(cu, PR_SCALE, t0);
}
static void cuda_glu(struct kn_backend *be, float *y, const float *gate, const float *up, size_t n, int act) {
    struct kn_cuda *cu = cu_of(be);
    struct kn_pend *pd = &cu->pend;
    if (pd->kind == PEND_GEMV && !cu->q_n && pd->g.n_mat == 2 && pd->g.n[0] == pd->g.n[1] && y == pd->g.y[0] &&
        gate == pd->g.y[0] && up == pd->g.y[1] && n == (size_t)pd->gnt * (size_t)pd->g.n[0] &&
        (act == KN_ACT_SILU || act == KN_ACT_GELU_TANH)) {
        pd->kind = PEND_NONE;
        pd->g.glu = act;
        const double t0 = prof_t0(cu);
        launch_rc(cu, "gemv+glu", kn_cuda_gemv_multi(cu->stream, &pd->g, pd->gtype, pd->gK, pd->gx, pd->gnt,
                                                     cu->gemv_legacy));
        prof_end(cu, PR_GEMV_GLU, t0);
        return;
    }
    if (pre_op(cu)) return;
    const double t0 = prof_t0(cu);
    launch_rc(cu, "glu", kn_cuda_glu(cu->stream, y, gate, up, n, act));
    prof_end(cu, PR_GLU, t0);
}

static void attn_zero(struct kn_cuda *cu, const struct kn_attn_args *a, int D) {
    if (D > 0) cudaMemsetAsync(a->out, 0, sizeof(float) * (size_t)a->n_tok * a->n_head * D, cu->stream);
}

// Sizes the decode kernel's grid (p has everything else): chunks per warp so that about 16 warps per SM have
// work, splits of KN_CUDA_DEC_WARPS * chunks_per_warp chunks, partials and counters. -1: use the other kernel.
static int attn_decode_plan(struct kn_cuda *cu, struct kn_cuda_attn_params *p, int max_chunks) {
    const int D = p->D, H = p->n_head_kv;
    const size_t smem = kn_cuda_attention_decode_smem(p->rows_per_warp, D, p->bits, p->group);
    if (!smem || smem > (size_t)cu->smem_optin) return -1;
    const int grp = p->n_head / H;
    const int64_t n_rb = ((int64_t)p->n_tok * grp + p->rows_per_warp - 1) / p->rows_per_warp;
    if (n_rb > 65535 || H > 65535) return -1;
    const int64_t units = (int64_t)H * n_rb * (max_chunks > 0 ? max_chunks : 1);
    const int64_t target = 16 * (int64_t)cu->n_sm;
    int64_t cpw = (units + target - 1) / target;
    if (cpw < 1) cpw = 1;
    int64_t S = (max_chunks + KN_CUDA_DEC_WARPS * cpw - 1) / (KN_CUDA_DEC_WARPS * cpw);
    while (S > 256) {
        cpw *= 2;
        S = (max_chunks + KN_CUDA_DEC_WARPS * cpw - 1) / (KN_CUDA_DEC_WARPS * cpw);
    }
    if (S < 1) S = 1;
    p->chunks_per_warp = (int)cpw;
    p->n_split = (int)S;
    p->chunks_per_split = (int)(KN_CUDA_DEC_WARPS * cpw);
    p->fuse_combine = !p->probs && S > 1 && S <= KN_CUDA_DEC_FUSE_SPLITS &&
                      (int64_t)p->rows_per_warp * S * (D + 2) <= 16384;
    p->smem_optin = cu->smem_optin;
    p->part = NULL;
    p->counters = NULL;
    if (S > 1 || p->probs) {
        size_t need = (size_t)p->n_tok * p->n_head * (size_t)S * (size_t)(D + 2) * sizeof(float);
        if (scratch_reserve(cu, (void **)&cu->att_part, &cu->att_part_cap, need)) return -1;
        p->part = cu->att_part;
    }
    if (p->fuse_combine) {
        size_t need = (size_t)(H * n_rb) * sizeof(int32_t);
        if (cu->att_ctr_cap < need) {
            if (scratch_reserve(cu, (void **)&cu->att_ctr, &cu->att_ctr_cap, need)) return -1;
            if (cuda_fail(cu, "attention counters", cudaMemsetAsync(cu->att_ctr, 0, cu->att_ctr_cap, cu->stream)))
                return -1;
        }
        p->counters = cu->att_ctr;
    }
    return 0;
}

static void cuda_attention(struct kn_backend *be, const struct kn_attn_args *a) {
    struct kn_cuda *cu = cu_of(be);
    // a held-back kv_store stays pending until this op's tables are staged (one copy for both)
    if (!(cu->pend.kind == PEND_KV_STORE && !cu->q_n) && pre_op(cu)) return;
    if (a->n_tok <= 0) return;
    const double t0 = prof_t0(cu);
    const struct kv_layer_view *kv = a->kv;
    const int D = kv->head_dim, H = kv->n_head_kv;
    if (H <= 0 || D <= 0 || a->n_head % H != 0) {
        set_err(cu, "attention: %d query heads do not group over %d KV heads", a->n_head, H);
        attn_zero(cu, a, D);
        return;
    }
    if (D > KN_CUDA_MAX_HEAD_DIM) {
        set_err(cu, "attention: head_dim %d is above the CUDA kernels' limit of %d", D, KN_CUDA_MAX_HEAD_DIM);
        attn_zero(cu, a, D);
        return;
    }
    const int packed = kv->bits > 0;
    if (packed && !kvq_fmt_ok(kv_qfmt_make(D, kv->group, kv->bits))) {
        set_err(cu, "attention: unsupported packed format (D=%d G=%d B=%d)", D, kv->group, kv->bits);
        attn_zero(cu, a, D);
        return;
    }
    int max_slots = 0, max_chunks = 0;
    size_t n_ptr = 0;
    for (int h = 0; h < H; h++) {
        const struct kv_head_view *hv = &kv->heads[h];
        int nq = packed ? hv->n_q : 0, nfb = (hv->n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
        int ns = nq * (packed ? kv->group : 0) + hv->n_fp;
        if (ns > max_slots) max_slots = ns;
        if (nq + nfb > max_chunks) max_chunks = nq + nfb;
        n_ptr += (size_t)nq + (size_t)nfb;
    }
    if (a->probs && a->probs_stride < max_slots) {
        set_err(cu, "attention: probs_stride %d < %d slots", a->probs_stride, max_slots);
        attn_zero(cu, a, D);
        return;
    }
    struct kn_cuda_attn_params p;
    memset(&p, 0, sizeof p);
    p.out = a->out;
    p.q = a->q;
    p.n_tok = a->n_tok;
    p.n_head = a->n_head;
    p.n_head_kv = H;
    p.D = D;
    p.scale = a->scale;
    p.bits = packed ? kv->bits : 0;
    p.group = packed ? kv->group : 0;
    p.window = kv->window;
    p.probs = a->probs;
    p.probs_stride = a->probs_stride;
    const int grp = a->n_head / H;
    p.rows_per_warp = kn_cuda_attention_rows_per_warp(a->n_tok, grp);
    const int64_t n_rb = ((int64_t)a->n_tok * grp + p.rows_per_warp - 1) / p.rows_per_warp;
    const int64_t base = (int64_t)H * n_rb;
    const int64_t target = 32 * (int64_t)cu->n_sm;
    int64_t n_split = (target + base - 1) / base;
    int64_t cap = (max_chunks + 1) / 2;
    if (n_split > cap) n_split = cap;
    if (n_split < 1) n_split = 1;
    int cps = max_chunks > 0 ? (int)((max_chunks + n_split - 1) / n_split) : 1;
    p.n_split = max_chunks > 0 ? (max_chunks + cps - 1) / cps : 1;
    p.chunks_per_split = cps;
    size_t bytes = (size_t)H * sizeof(struct kn_cuda_attn_head) + n_ptr * sizeof(void *) + (size_t)a->n_tok * 4;
    if (stage_reserve(cu, bytes)) return;
    void *hh, *hp;
    p.heads = stage_alloc(cu, (size_t)H * sizeof(struct kn_cuda_attn_head), &hh);
    p.ptrs = stage_alloc(cu, n_ptr * sizeof(void *), &hp);
    struct kn_cuda_attn_head *heads = hh;
    void **ptrs = hp;
    size_t k = 0;
    for (int h = 0; h < H; h++) {
        const struct kv_head_view *hv = &kv->heads[h];
        int nq = packed ? hv->n_q : 0, nfb = (hv->n_fp + KV_FP_BLOCK - 1) / KV_FP_BLOCK;
        heads[h].n_fp = hv->n_fp;
        heads[h].n_q = nq;
        heads[h].q_off = (int32_t)k;
        if (nq) memcpy(ptrs + k, hv->q_blocks, (size_t)nq * sizeof(void *));
        k += (size_t)nq;
        heads[h].fp_off = (int32_t)k;
        if (nfb) memcpy(ptrs + k, hv->fp_blocks, (size_t)nfb * sizeof(void *));
        k += (size_t)nfb;
    }
    uintptr_t ptr_bits = 0; // the decode kernel reads blocks with 16-byte loads
    for (size_t i = 0; i < k; i++) ptr_bits |= (uintptr_t)ptrs[i];
    p.q_pos = stage_pos(cu, a->q_pos, a->n_tok);
    if (stage_send(cu)) return;
    if (pend_flush(cu)) return; // the held-back kv_store, its slot table sent with ours
    if (!cu->attn_legacy && a->n_tok <= KN_CUDA_DEC_MAX_TOK && !(ptr_bits & 15)) {
        struct kn_cuda_attn_params dp = p;
        if (attn_decode_plan(cu, &dp, max_chunks) == 0) {
            launch_rc(cu, "attention", kn_cuda_attention_decode(cu->stream, &dp));
            prof_end(cu, PR_ATTN, t0);
            return;
        }
    }
    if (p.n_split > 1 || p.probs) {
        size_t need = (size_t)a->n_tok * a->n_head * p.n_split * (D + 2) * sizeof(float);
        if (scratch_reserve(cu, (void **)&cu->att_part, &cu->att_part_cap, need)) {
            attn_zero(cu, a, D);
            return;
        }
        p.part = cu->att_part;
    }
    launch_rc(cu, "attention", kn_cuda_attention(cu->stream, &p));
    prof_end(cu, PR_ATTN, t0);
}

static void cuda_kv_store(struct kn_backend *be, const struct kv_slot *dst, const float *k, const float *v,
                          const int32_t *pos, int n_tok, int n_head_kv, int D) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu) || n_tok <= 0 || n_head_kv <= 0) return;
    const double t0 = prof_t0(cu);
    size_t ns = (size_t)n_tok * n_head_kv;
    if (stage_reserve(cu, ns * sizeof *dst + (size_t)n_tok * 4)) return;
    const struct kv_slot *d_dst = stage_put(cu, dst, ns * sizeof *dst);
    const int32_t *d_pos = stage_pos(cu, pos, n_tok);
    if (cu->fuse) { // held back: the attention that follows sends its tables in the same copy
        struct kn_pend *pd = &cu->pend;
        pd->kdst = d_dst;
        pd->kk = k;
        pd->kv = v;
        pd->kpos = d_pos;
        pd->kn_tok = n_tok;
        pd->kn_head = n_head_kv;
        pd->kD = D;
        pd->kind = PEND_KV_STORE;
        return;
    }
    if (stage_send(cu)) return;
    launch_rc(cu, "kv_store", kn_cuda_kv_store(cu->stream, d_dst, k, v, d_pos, n_tok, n_head_kv, D));
    prof_end(cu, PR_KV_STORE, t0);
}

static void cuda_kv_move(struct kn_backend *be, const struct kv_slot *src, const struct kv_slot *dst, int n, int D) {
    struct kn_cuda *cu = cu_of(be);
    for (int i = 0; i < n; i++) {
        if (src[i].block == dst[i].block && src[i].slot == dst[i].slot) continue;
        struct kn_cuda_cmd c;
        memset(&c, 0, sizeof c);
        c.kind = KN_CMD_MOVE;
        c.D = D;
        struct kv_slot s2[2] = {src[i], dst[i]};
        if (q_push(cu, &c, s2, 2)) return;
    }
}

static void cuda_kv_quant(struct kn_backend *be, const struct kv_qjob *jobs, int n, struct kv_qfmt fmt) {
    struct kn_cuda *cu = cu_of(be);
    if (!kvq_fmt_ok(fmt) || fmt.D > KN_CUDA_MAX_HEAD_DIM) {
        set_err(cu, "kv_quant: unsupported format D=%d G=%d B=%d VG=%d", fmt.D, fmt.G, fmt.B, fmt.VG);
        return;
    }
    for (int i = 0; i < n; i++) {
        const struct kv_qjob *j = &jobs[i];
        if (j->t < 0 || j->t >= fmt.G) {
            set_err(cu, "kv_quant: job %d slot %d outside group of %d", i, j->t, fmt.G);
            continue;
        }
        struct kn_cuda_cmd c;
        memset(&c, 0, sizeof c);
        c.t = j->t;
        c.D = fmt.D;
        c.G = fmt.G;
        c.B = fmt.B;
        c.VG = fmt.VG;
        c.dst = j->group;
        int rc = 0;
        switch (j->kind) {
        case KV_QJOB_VALUE:
            if (j->n_src < 1) {
                set_err(cu, "kv_quant: value job %d without a source slot", i);
                break;
            }
            c.kind = KN_CMD_QVALUE;
            c.n_src = 1;
            rc = q_push(cu, &c, j->src, 1);
            break;
        case KV_QJOB_KEYS:
            if (j->n_src < 0 || j->n_src > fmt.G) {
                set_err(cu, "kv_quant: keys job %d with %d sources (group %d)", i, j->n_src, fmt.G);
                break;
            }
            c.kind = KN_CMD_QKEYS;
            c.n_src = j->n_src;
            rc = q_push(cu, &c, j->src, j->n_src);
            break;
        case KV_QJOB_COPY_V:
            if (!j->src_group || j->t_src < 0 || j->t_src >= fmt.G) {
                set_err(cu, "kv_quant: copy job %d has no valid source", i);
                break;
            }
            c.kind = KN_CMD_QCOPYV;
            c.src = j->src_group;
            c.t_src = j->t_src;
            rc = q_push(cu, &c, NULL, 0);
            break;
        default: set_err(cu, "kv_quant: job %d has unknown kind %d", i, j->kind); break;
        }
        if (rc) return;
    }
}

static int cuda_argmax(struct kn_backend *be, const float *x, int n) {
    struct kn_cuda *cu = cu_of(be);
    if (pre_op(cu)) return -1;
    if (n <= 0) return -1;
    const double t0 = prof_t0(cu);
    if (launch_rc(cu, "argmax", kn_cuda_argmax(cu->stream, cu->argmax_dev, x, n))) return -1;
    if (dl_reserve(cu, 4)) return -1;
    if (cuda_fail(cu, "argmax", cudaMemcpyAsync(cu->dl_host, cu->argmax_dev, 4, cudaMemcpyDeviceToHost, cu->stream)))
        return -1;
    if (stream_sync(cu)) return -1;
    int32_t r;
    memcpy(&r, cu->dl_host, 4);
    prof_end(cu, PR_ARGMAX, t0);
    return r;
}

// ---- construction -------------------------------------------------------------------------------------------

static void cuda_free(struct kn_backend *be) {
    struct kn_cuda *cu = cu_of(be);
    pend_flush(cu);
    q_flush(cu);
    if (cu->prof) prof_print(cu);
    if (cu->stream) cudaStreamSynchronize(cu->stream);
    // every allocation still in the map (ours and the callers' leftovers)
    for (size_t i = 0; i < cu->amap_cap; i++)
        if (cu->amap[i].key) cudaFree((void *)cu->amap[i].key);
    free(cu->amap);
    if (cu->st_host) cudaFreeHost(cu->st_host);
    if (cu->dl_host) cudaFreeHost(cu->dl_host);
    if (cu->blas) cublasDestroy(cu->blas);
    if (cu->stream) cudaStreamDestroy(cu->stream);
    (void)cudaGetLastError();
    free(cu->q_cmds);
    free(cu->q_slots);
    free(cu->ivl);
    free(cu->q_work);
    free(cu);
}

static const struct kn_ops cuda_ops = {
    .name = "cuda",
    .free = cuda_free,
    .alloc = cuda_alloc,
    .dealloc = cuda_dealloc,
    .upload = cuda_upload,
    .download = cuda_download,
    .memset0 = cuda_memset0,
    .tensor_load = cuda_tensor_load,
    .tensor_unload = cuda_tensor_unload,
    .mem_info = cuda_mem_info,
    .sync = cuda_sync,
    .matmul = cuda_matmul,
    .get_rows = cuda_get_rows,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .add = cuda_add,
    .scale = cuda_scale,
    .glu = cuda_glu,
    .attention = cuda_attention,
    .kv_store = cuda_kv_store,
    .kv_move = cuda_kv_move,
    .kv_quant = cuda_kv_quant,
    .argmax = cuda_argmax,
    .last_error = cuda_last_error,
};

int kn_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static void init_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void init_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

struct kn_backend *kn_cuda_init(int device, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e == cudaErrorNoDevice) {
            init_err(err, errlen, "no CUDA device found");
        } else if (e == cudaErrorInsufficientDriver || e == cudaErrorCallRequiresNewerDriver) {
            int drv = 0, rt = 0;
            cudaDriverGetVersion(&drv);
            cudaRuntimeGetVersion(&rt);
            if (drv == 0)
                init_err(err, errlen, "no NVIDIA driver is loaded (no CUDA device)");
            else
                init_err(err, errlen,
                         "the NVIDIA driver is too old for this build (driver supports CUDA %d.%d, kvchat needs %d.%d)",
                         drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        } else {
            init_err(err, errlen, "CUDA is unavailable: %s", cudaGetErrorString(e));
        }
        return NULL;
    }
    if (n <= 0) {
        init_err(err, errlen, "no CUDA device found");
        return NULL;
    }
    if (device < 0 || device >= n) {
        init_err(err, errlen, "CUDA device %d does not exist (%d found)", device, n);
        return NULL;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        (void)cudaGetLastError();
        init_err(err, errlen, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    struct kn_cuda *cu = calloc(1, sizeof *cu);
    if (!cu) {
        init_err(err, errlen, "cuda backend: out of host memory");
        return NULL;
    }
    cu->base.ops = &cuda_ops;
    cu->device = device;
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        init_err(err, errlen, "cannot query CUDA device %d: %s", device, cudaGetErrorString(e));
        goto fail;
    }
    snprintf(cu->dev_name, sizeof cu->dev_name, "%s", prop.name);
    cu->n_sm = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    if ((e = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        init_err(err, errlen, "cannot create a CUDA stream: %s", cudaGetErrorString(e));
        goto fail;
    }
    cublasStatus_t bs = cublasCreate(&cu->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cu->blas = NULL;
        init_err(err, errlen, "cannot initialise cuBLAS (status %d)", (int)bs);
        goto fail;
    }
    cublasSetStream(cu->blas, cu->stream);
    const char *pv = getenv("KVCHAT_CUDA_PROF");
    cu->prof = pv && pv[0] && strcmp(pv, "0") != 0;
    const char *fv = getenv("KVCHAT_CUDA_FUSE");
    cu->fuse = !(fv && !strcmp(fv, "0"));
    const char *av = getenv("KVCHAT_CUDA_ATTN");
    cu->attn_legacy = av && !strcmp(av, "legacy");
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
        (void)cudaGetLastError();
        optin = 0;
    }
    cu->smem_optin = optin > 48 * 1024 ? optin : 48 * 1024;
    const char *gv = getenv("KVCHAT_CUDA_GEMV");
    cu->gemv_legacy = gv && !strcmp(gv, "legacy");
    const char *mode = getenv("KVCHAT_CUDA_GEMM");
    cu->gemm_mode = KN_GEMM_F32;
    if (mode && !strcmp(mode, "tf32")) cu->gemm_mode = KN_GEMM_TF32;
    if (mode && !strcmp(mode, "f16")) cu->gemm_mode = KN_GEMM_F16;
    cublasSetMathMode(cu->blas, cu->gemm_mode == KN_GEMM_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (cudaHostAlloc((void **)&cu->st_host, KN_STAGE_BYTES, cudaHostAllocDefault) != cudaSuccess) {
        cu->st_host = NULL;
        init_err(err, errlen, "CUDA: cannot pin %u MiB of host memory for staging", KN_STAGE_BYTES >> 20);
        goto fail;
    }
    cu->st_dev = dev_alloc(cu, KN_STAGE_BYTES, KN_MEM_SCRATCH);
    cu->argmax_dev = dev_alloc(cu, 256, KN_MEM_SCRATCH);
    if (!cu->st_dev || !cu->argmax_dev || dl_reserve(cu, KN_DL_BYTES)) {
        init_err(err, errlen, "%s", cu->err[0] ? cu->err : "CUDA: out of memory for staging buffers");
        goto fail;
    }
    cu->st_cap = KN_STAGE_BYTES;
    return &cu->base;
fail:
    (void)cudaGetLastError();
    cuda_free(&cu->base);
    return NULL;
}

#else // !KN_HAVE_CUDA

struct kn_backend *kn_cuda_init(int device, char *err, size_t errlen) {
    (void)device;
    if (err && errlen) snprintf(err, errlen, "this kvchat was built without CUDA (rebuild with nvcc on PATH)");
    return NULL;
}
int kn_cuda_device_count(void) { return 0; }

#endif
