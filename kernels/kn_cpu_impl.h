// kernels/kn_cpu_impl.h — private to the CPU backend: the backend object, thread pool, scratch and op entry points.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn.h"

// Full unrolling of register-blocked loops (trip counts are constants after inlining); without it GCC -O2
// keeps accumulator arrays in memory.
#if defined(__GNUC__)
#define KN_PRAGMA(x) _Pragma(#x)
#define KN_UNROLL KN_PRAGMA(GCC unroll 16)
#else
#define KN_UNROLL
#endif

struct kn_cpu; // the CPU backend object (kernels/kn_cpu.c); its first member is `struct kn_backend`

// A parallel task: `task` in [0, n_tasks), `tid` in [0, n_threads) names the running thread's scratch.
typedef void (*kn_cpu_task_fn)(void *ctx, int task, int tid);

// Runs fn(ctx, task, tid) for every task on the pool (the calling thread takes part) and returns when all
// are done. Which thread runs which task is not fixed, so a task's result must not depend on tid.
void kn_cpu_parallel(struct kn_cpu *cpu, int n_tasks, kn_cpu_task_fn fn, void *ctx);
// Scratch owned by the backend, grown (rarely) by the calling thread before a parallel section; counted
// under KN_MEM_SCRATCH. NULL (and last_error set) when the allocation fails. Contents are not preserved.
void *kn_cpu_shared_scratch(struct kn_cpu *cpu, size_t nbytes);
// Makes every thread's private scratch at least nbytes; 0 ok, -1 on failure.
int kn_cpu_thread_scratch_reserve(struct kn_cpu *cpu, size_t nbytes);
void *kn_cpu_thread_scratch(struct kn_cpu *cpu, int tid);
void kn_cpu_set_error(struct kn_cpu *cpu, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// 1 when the portable scalar kernels are forced (tests compare them with the SIMD ones).
int kn_cpu_scalar_forced(const struct kn_cpu *cpu);
// Forces (1) or releases (0) the scalar kernels on this backend; for tests and benchmarks.
void kn_cpu_force_scalar(struct kn_backend *be, int on);

// 1 when decode matmuls on quantised weights use int8 activations (kernels/kn_cpu_q8.c), 0 (the default) when
// they use fp32 activations (exact up to fp32 rounding). kn_cpu_set_int8_act() switches it per backend.
int kn_cpu_int8_act(const struct kn_cpu *cpu);

// ---- int8 activations for decode matmuls (kernels/kn_cpu_q8.c) ----
#define KN_Q8_MAX_TOK 8 // most tokens per call
// One activation row of K values quantised to int8 (the same format for every weight type): codes q (K), per
// 32 values the scale d and d·Σq in s, per 16 values the code sums bsum.
struct kn_q8_row {
    int8_t *q;
    float *d;
    float *s;
    int16_t *bsum;
};
// 1 when weights of this type have an int8-activation kernel.
int kn_q8_supported(int type);
// Bytes of one row's buffer (64-byte aligned parts); kn_q8_row_view lays a row out in such a buffer.
size_t kn_q8_row_bytes(int64_t K);
void kn_q8_row_view(void *base, int64_t K, struct kn_q8_row *r);
// Quantises x (K values, K a multiple of 32) into r (AVX2 builds only).
void kn_q8_quantize_row(const float *x, int64_t K, const struct kn_q8_row *r);
// y(n_tok, N) = x · Wᵀ with x quantised to int8 per row; 0 done, -1 not applicable (no SIMD, type, n_tok).
int kn_cpu_matmul_q8(struct kn_cpu *cpu, float *y, const struct kn_tensor *w, const float *x, int n_tok,
                     int rows_per_task);
// The same product for a batch (prefill) with AVX-512 VNNI (kernels/kn_cpu_gemm8.c): x quantised as above,
// int8 dot products against unpacked weight panels; 0 done, -1 not applicable (no VNNI, type).
int kn_cpu_gemm8(struct kn_cpu *cpu, float *y, const struct kn_tensor *w, const float *x, int n_tok);
// Rows of N output rows per parallel task of a matmul: about N/64 (at most max_rows), a multiple of `multiple`.
static inline int kn_cpu_rows_per_task(int64_t N, int multiple, int max_rows) {
    int64_t r = N / 64;
    if (r > max_rows) r = max_rows;
    r = (r + multiple - 1) / multiple * multiple;
    if (r < multiple) r = multiple;
    return (int)r;
}

// Ops implemented in the other kn_cpu_*.c files (contracts as in struct kn_ops, kernels/kn.h).
// y(n_tok, w->n_rows) = x(n_tok, w->n_cols) · Wᵀ; y must not alias x
void kn_cpu_matmul(struct kn_backend *be, float *y, const struct kn_tensor *w, const float *x, int n_tok);
// y(n, w->n_cols) = rows ids(n) of W
void kn_cpu_get_rows(struct kn_backend *be, float *y, const struct kn_tensor *w, const int32_t *ids, int n);
// a->out(n_tok, n_head, head_dim) from a->q(n_tok, n_head, head_dim) over a->kv
void kn_cpu_attention(struct kn_backend *be, const struct kn_attn_args *a);
// k, v (n_tok, n_head_kv, D) -> fp slots dst(n_tok * n_head_kv); pos (n_tok)
void kn_cpu_kv_store(struct kn_backend *be, const struct kv_slot *dst, const float *k, const float *v,
                     const int32_t *pos, int n_tok, int n_head_kv, int D);
// fp slots src(n) -> dst(n), in order
void kn_cpu_kv_move(struct kn_backend *be, const struct kv_slot *src, const struct kv_slot *dst, int n, int D);
// jobs(n), in order
void kn_cpu_kv_quant(struct kn_backend *be, const struct kv_qjob *jobs, int n, struct kv_qfmt fmt);

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
// Software prefetch helpers. They must be always_inline: GCC 12 marks a function whose only effect is
// __builtin_prefetch "looping const" (ipa-pure-const) and then deletes every call to it as dead code, so a
// plain `static inline` helper that is not inlined early silently emits no prefetch at all.
#define KN_PF_INLINE static inline __attribute__((always_inline))

// Decode streams weights from DRAM; the hardware prefetcher alone leaves part of the latency exposed, so the
// decode kernels prefetch the nbytes at p + KN_PF_DIST as they read p (rows are contiguous, so this runs on
// into the next row).
#ifndef KN_PF_DIST
#define KN_PF_DIST 4096
#endif
KN_PF_INLINE void kn_prefetch_ahead(const void *p, size_t nbytes) {
    const char *c = (const char *)p + KN_PF_DIST;
    for (size_t o = 0; o < nbytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
}
// Prefetches columns [k0, k0 + kc) of weight rows [r0, r1) (row_bytes apart) into L1: the next panel of the
// prefill kernels, read from DRAM while the current one is computed.
KN_PF_INLINE void kn_prefetch_panel(const void *w, size_t row_bytes, int type, int64_t r0, int64_t r1, int64_t k0,
                                     int64_t kc) {
    size_t off = kn_row_bytes(type, k0), len = kn_row_bytes(type, kc);
    for (int64_t r = r0; r < r1; r++) {
        const char *p = (const char *)w + (size_t)r * row_bytes + off;
        for (size_t o = 0; o < len; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    }
}
// The 8 six-bit scales and mins of a Q4_K/Q5_K super-block (its first 16 bytes: d, dmin, scales[12]) as
// d·sc and dmin·m, all in vector registers (the fp32 and the int8-activation kernels share it). As dwords
// the scale bytes are L1 = s[0..3], L2 = s[4..7], L3 = s[8..11]; sc[0..3] = L1 & 63, m[0..3] = L2 & 63,
// sc[4..7] = (L3 & 15) | (L1 >> 6) << 4, m[4..7] = (L3 >> 4 & 15) | (L2 >> 6) << 4, bytewise.
static inline __attribute__((always_inline)) void
kn_q4k_scales8(const void *blk, __m256 *scale, __m256 *dmin_m) {
    __m128i v = _mm_loadu_si128((const __m128i *)blk);
    __m128 dd = _mm_cvtph_ps(v);
    __m128i p = _mm_shuffle_epi32(v, _MM_SHUFFLE(3, 2, 3, 1)); // L1 L3 L2 L3
    __m128i q = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 1, 1)); // L1 L1 L2 L2
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(p, _mm_setr_epi32(0, 0, 0, 4)),
                               _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i hi =
        _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(q, 6), _mm_setr_epi32(0, 0x03030303, 0, 0x03030303)), 4);
    __m128i r = _mm_or_si128(lo, hi); // bytes 0..7: sc, 8..15: m
    *scale = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(r)), _mm256_broadcastss_ps(dd));
    *dmin_m = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(r, 8))),
                            _mm256_broadcastss_ps(_mm_movehdup_ps(dd)));
}

// exp of 8 floats: 2^n * e^r with |r| <= ln2/2, degree-7 Taylor polynomial (truncation < 1e-8 relative);
// underflows to 0 below -87.3 and saturates to +inf above 88.7. Within 2 ulp of expf.
static inline __m256 kn_exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.7f), lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x); // ln2 split: hi part exact
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n: n in [-126, 128]; split the scaling in two so n = 128 does not overflow the exponent field
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    p = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    p = _mm256_andnot_ps(under, p);
    return _mm256_blendv_ps(p, _mm256_set1_ps(__builtin_inff()), over);
}
#endif
