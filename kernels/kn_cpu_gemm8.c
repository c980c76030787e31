// kernels/kn_cpu_gemm8.c — batch (prefill) matmuls with int8 activations on AVX-512 VNNI.
//
// y(n_tok, N) = x · Wᵀ for every GGML block type with an int8 decode kernel (kn_q8_supported). The
// activations are quantised exactly as the decode kernels quantise them (kn_q8_quantize_row: per 32 values
// d = amax/127, codes in [-127, 127]), so a token gets the same numbers whether it is prefilled or decoded.
//
// Every weight value is code·scale + bias with an integer code; with u = code + off (off makes it unsigned:
// 8 for Q4_0, 16 for Q5_0, 32 for Q6_K, 128 for Q8_0, 0 for the types with a min) a sub-block of S values
// (S = 16 for Q6_K, 32 otherwise) contributes
//     d_x · scale · Σ u·q  +  (bias − off·scale) · d_x·Σq
// to the dot product. Σ u·q is exact in int32 (vpdpbusd: unsigned weight bytes times signed activation bytes,
// four products per lane), so the only rounding beyond fp32 is the activations' int8 quantisation.
//
// Layout: a task owns 16-row groups. For each 512-column slice a group's weights are unpacked once into an
// L1 panel in VNNI order (one dword lane per row holding 4 consecutive columns), with per-sub-block scale and
// bias vectors over the 16 rows; the activations are packed once per call as 12-token tiles (dword k/4 of
// token t at [k/4][t]), so the micro-kernel's 12 broadcasts are fixed displacements from one pointer. The
// micro-kernel keeps 12 int32 and 12 fp32 accumulators: per sub-block S/4 vpdpbusd per token, then one
// conversion and two FMAs. Each output is computed by one thread in a fixed order, so results do not depend
// on the thread count.
#include "kernels/kn_cpu_impl.h"

#include <string.h>

#include "kernels/kn_cpu_unpack.h"
#include "kernels/kn_quant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX2__) &&            \
    defined(__FMA__) && defined(__F16C__) && !defined(KN_NO_AVX512)
#define KN_G8 1
#endif

#ifdef KN_G8

#define G8_KC 512 // columns per panel slice (a multiple of 256)
#define G8_R 16   // rows per panel: one zmm lane each
#define G8_T 12   // tokens per tile

struct g8_panel {
    uint8_t codes[G8_KC / 4][G8_R][4]; // u = code + off; dword [k/4][r] holds columns k..k+3 of row r
    float ws[G8_KC / 16][G8_R];        // per sub-block, per row: the weight scale
    float wb[G8_KC / 16][G8_R];        // per sub-block, per row: bias − off·scale
    uint8_t rows[G8_R][G8_KC];         // the unpacked codes row by row, before the transpose
};

struct g8_ctx {
    struct kn_cpu *cpu;
    int type, sub, off;
    int64_t K, N;
    size_t row_bytes;
    const uint8_t *w;
    const float *x;
    float *y; // (n_tok, N)
    int n_tok, n_tiles, rows_per_task;
    // activation tiles: tile i's codes at aq + i·(K/4)·G8_T (int32 [K/4][G8_T]), its d at ad + i·(K/32)·G8_T
    // ([K/32][G8_T]) and its d·Σq per sub-block at ab + i·(K/sub)·G8_T ([K/sub][G8_T]); padding tokens are 0
    int32_t *aq;
    float *ad, *ab;
};

static int g8_offset(int type) {
    switch (type) {
    case KN_Q4_0: return 8;
    case KN_Q5_0: return 16;
    case KN_Q6_K: return 32;
    case KN_Q8_0: return 128;
    default: return 0; // Q4_1, Q5_1, Q4_K, Q5_K: unsigned codes and a min
    }
}

// Task i: quantises the tokens of tile i and interleaves them into it (one thread per tile: tiles share no
// cache lines).
static void g8_quant_task(void *vctx, int tile, int tid) {
    const struct g8_ctx *c = vctx;
    const int64_t K = c->K;
    struct kn_q8_row r;
    kn_q8_row_view(kn_cpu_thread_scratch(c->cpu, tid), K, &r);
    int32_t *q = c->aq + (size_t)tile * (size_t)(K / 4) * G8_T;
    float *d = c->ad + (size_t)tile * (size_t)(K / 32) * G8_T;
    float *b = c->ab + (size_t)tile * (size_t)(K / c->sub) * G8_T;
    for (int lane = 0; lane < G8_T && tile * G8_T + lane < c->n_tok; lane++) {
        kn_q8_quantize_row(c->x + (size_t)(tile * G8_T + lane) * K, K, &r);
        for (int64_t k4 = 0; k4 < K / 4; k4++) memcpy(q + k4 * G8_T + lane, r.q + 4 * k4, 4);
        for (int64_t j = 0; j < K / 32; j++) d[j * G8_T + lane] = r.d[j];
        if (c->sub == 32)
            for (int64_t j = 0; j < K / 32; j++) b[j * G8_T + lane] = r.s[j];
        else
            for (int64_t j = 0; j < K / 16; j++) b[j * G8_T + lane] = r.d[j / 2] * (float)r.bsum[j];
    }
}

// Unpacks rows [rg, rg + nr) (nr <= 16; missing rows are zero), columns [k0, k0 + kc) into p.
static void g8_fill(const struct g8_ctx *c, int64_t rg, int nr, int64_t k0, int kc, struct g8_panel *p) {
    const int us = kn_type_block_size(c->type);
    const size_t bb = kn_type_block_bytes(c->type);
    const int S = c->sub, n_sub = kc / S;
    const float off = (float)c->off;
    const __m256i voff = _mm256_set1_epi8((char)c->off);
    struct kn_unit u;
    for (int r = 0; r < G8_R; r++) {
        if (r >= nr) {
            memset(p->rows[r], 0, (size_t)kc);
            for (int j = 0; j < n_sub; j++) p->ws[j][r] = p->wb[j][r] = 0.0f;
            continue;
        }
        const uint8_t *row = c->w + (size_t)(rg + r) * c->row_bytes;
        for (int k = 0; k < kc; k += KN_QK_K) {
            int nb = 8;
            if (us == KN_QK) nb = (kc - k) / KN_QK < 8 ? (kc - k) / KN_QK : 8;
            kn_unpack_unit(c->type, row + (size_t)((k0 + k) / us) * bb, nb, &u);
            int nv = us == KN_QK ? nb * KN_QK : KN_QK_K;
            for (int v = 0; v < nv; v += 32) {
                __m256i cv = _mm256_loadu_si256((const __m256i *)(const void *)(u.codes + v));
                _mm256_storeu_si256((__m256i *)(void *)(p->rows[r] + k + v), _mm256_add_epi8(cv, voff));
            }
            for (int j = 0; j < u.n_sub; j++) {
                int jj = k / S + j;
                p->ws[jj][r] = u.scale[j];
                p->wb[jj][r] = (S == 32 ? u.bias[j] : 0.0f) - off * u.scale[j];
            }
        }
    }
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(G8_KC));
    for (int k4 = 0; k4 < kc / 4; k4++)
        _mm512_store_si512((void *)p->codes[k4], _mm512_i32gather_epi32(idx, (const void *)(&p->rows[0][4 * k4]), 1));
}

// acc[t] (lane r: row r) += panel · token t of the tile, over n_sub sub-blocks of S values. q: the tile's codes
// at the slice's first column, d and b its scales and sums likewise.
__attribute__((always_inline)) static inline void g8_micro(const struct g8_panel *p, int n_sub, const int S,
                                                           const int32_t *q, const float *d, const float *b,
                                                           __m512 *acc) {
    for (int j = 0; j < n_sub; j++) {
        __m512i ai[G8_T];
        KN_UNROLL
        for (int t = 0; t < G8_T; t++) ai[t] = _mm512_setzero_si512();
        KN_UNROLL
        for (int s = 0; s < S / 4; s++) {
            __m512i w = _mm512_load_si512((const void *)p->codes[j * (S / 4) + s]);
            const int32_t *qs = q + (j * (S / 4) + s) * G8_T;
            KN_UNROLL
            for (int t = 0; t < G8_T; t++) ai[t] = _mm512_dpbusd_epi32(ai[t], w, _mm512_set1_epi32(qs[t]));
        }
        __m512 ws = _mm512_load_ps(p->ws[j]), wb = _mm512_load_ps(p->wb[j]);
        const float *dj = d + ((j * S) / 32) * G8_T, *bj = b + j * G8_T;
        KN_UNROLL
        for (int t = 0; t < G8_T; t++) {
            __m512 sc = _mm512_mul_ps(ws, _mm512_set1_ps(dj[t]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[t]), sc, acc[t]);
            acc[t] = _mm512_fmadd_ps(wb, _mm512_set1_ps(bj[t]), acc[t]);
        }
    }
}

static void g8_task(void *vctx, int task, int tid) {
    const struct g8_ctx *c = vctx;
    const int64_t K = c->K, N = c->N;
    const int S = c->sub;
    int64_t r0 = (int64_t)task * c->rows_per_task;
    int64_t r1 = r0 + c->rows_per_task < N ? r0 + c->rows_per_task : N;
    struct g8_panel *p = kn_cpu_thread_scratch(c->cpu, tid);
    for (int64_t rg = r0; rg < r1; rg += G8_R) {
        int nr = (int)(r1 - rg < G8_R ? r1 - rg : G8_R);
        __mmask16 m = (__mmask16)((1u << nr) - 1u);
        for (int64_t k0 = 0; k0 < K; k0 += G8_KC) {
            int kc = (int)(K - k0 < G8_KC ? K - k0 : G8_KC);
            g8_fill(c, rg, nr, k0, kc, p);
            // the next panel's weights (this group's next slice, or the next group's first) come from DRAM
            // while the micro-kernels run on this one
            int64_t nrg = k0 + G8_KC < K ? rg : rg + G8_R, nk0 = k0 + G8_KC < K ? k0 + G8_KC : 0;
            if (nrg < r1)
                kn_prefetch_panel(c->w, c->row_bytes, c->type, nrg, nrg + G8_R < r1 ? nrg + G8_R : r1, nk0,
                                  K - nk0 < G8_KC ? K - nk0 : G8_KC);
            for (int tile = 0; tile < c->n_tiles; tile++) {
                const int32_t *q = c->aq + ((size_t)tile * (size_t)(K / 4) + (size_t)(k0 / 4)) * G8_T;
                const float *d = c->ad + ((size_t)tile * (size_t)(K / 32) + (size_t)(k0 / 32)) * G8_T;
                const float *b = c->ab + ((size_t)tile * (size_t)(K / S) + (size_t)(k0 / S)) * G8_T;
                __m512 acc[G8_T];
                KN_UNROLL
                for (int t = 0; t < G8_T; t++) acc[t] = _mm512_setzero_ps();
                if (S == 32)
                    g8_micro(p, kc / 32, 32, q, d, b, acc);
                else
                    g8_micro(p, kc / 16, 16, q, d, b, acc);
                int nt = c->n_tok - tile * G8_T < G8_T ? c->n_tok - tile * G8_T : G8_T;
                for (int t = 0; t < nt; t++) {
                    float *yr = c->y + (size_t)(tile * G8_T + t) * (size_t)N + rg;
                    __m512 v = k0 == 0 ? acc[t] : _mm512_add_ps(acc[t], _mm512_maskz_loadu_ps(m, yr));
                    _mm512_mask_storeu_ps(yr, m, v);
                }
            }
        }
    }
}

#endif // KN_G8

int kn_cpu_gemm8(struct kn_cpu *cpu, float *y, const struct kn_tensor *w, const float *x, int n_tok) {
#ifdef KN_G8
    const int64_t K = w->n_cols, N = w->n_rows;
    const int us = kn_type_block_size(w->type);
    if (!kn_q8_supported(w->type) || n_tok < 1 || K % us != 0 || !w->data) return -1;
    struct g8_ctx c;
    memset(&c, 0, sizeof c);
    c.cpu = cpu;
    c.type = w->type;
    c.sub = w->type == KN_Q6_K ? 16 : 32;
    c.off = g8_offset(w->type);
    c.K = K;
    c.N = N;
    c.row_bytes = kn_row_bytes(w->type, K);
    c.w = w->data;
    c.x = x;
    c.y = y;
    c.n_tok = n_tok;
    c.n_tiles = (n_tok + G8_T - 1) / G8_T;
    size_t tiles = (size_t)c.n_tiles;
    size_t nq = tiles * (size_t)K * G8_T * sizeof(int8_t), nd = tiles * (size_t)(K / 32) * G8_T * sizeof(float);
    size_t nb = tiles * (size_t)(K / c.sub) * G8_T * sizeof(float);
    nq = (nq + 63) & ~(size_t)63;
    nd = (nd + 63) & ~(size_t)63;
    nb = (nb + 63) & ~(size_t)63;
    size_t tscr = sizeof(struct g8_panel) > kn_q8_row_bytes(K) ? sizeof(struct g8_panel) : kn_q8_row_bytes(K);
    uint8_t *buf = kn_cpu_shared_scratch(cpu, nq + nd + nb);
    if (!buf || kn_cpu_thread_scratch_reserve(cpu, tscr) != 0) {
        memset(y, 0, sizeof(float) * (size_t)n_tok * (size_t)N);
        return 0; // the error is set
    }
    c.aq = (int32_t *)(void *)buf;
    c.ad = (float *)(void *)(buf + nq);
    c.ab = (float *)(void *)(buf + nq + nd);
    if (n_tok % G8_T) { // the last tile's padding tokens contribute 0
        size_t last = tiles - 1;
        memset(c.aq + last * (size_t)(K / 4) * G8_T, 0, (size_t)K * G8_T);
        memset(c.ad + last * (size_t)(K / 32) * G8_T, 0, sizeof(float) * (size_t)(K / 32) * G8_T);
        memset(c.ab + last * (size_t)(K / c.sub) * G8_T, 0, sizeof(float) * (size_t)(K / c.sub) * G8_T);
    }
    kn_cpu_parallel(cpu, c.n_tiles, g8_quant_task, &c);
    c.rows_per_task = kn_cpu_rows_per_task(N, G8_R, 128);
    kn_cpu_parallel(cpu, (int)((N + c.rows_per_task - 1) / c.rows_per_task), g8_task, &c);
    return 0;
#else
    (void)cpu;
    (void)y;
    (void)w;
    (void)x;
    (void)n_tok;
    return -1;
#endif
}

int kn_cpu_int8_batch(void) {
#ifdef KN_G8
    return 1;
#else
    return 0;
#endif
}
