// kernels/kn_cpu_unpack.h — private to the CPU backend: AVX2 unpackers of GGML weight blocks to int8 codes
// plus fp32 scales, shared by the fp32-activation kernels (kn_cpu_matmul.c) and the int8 GEMM
// (kn_cpu_gemm8.c).
#pragma once
#include <string.h>

#include "kernels/kn_cpu_impl.h"
#include "kernels/kn_types.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float kn_h2f(kn_half h) { return _cvtsh_ss(h); }

// ---- SIMD unpackers: a 256-value unit (one k-quant super-block, or up to 8 legacy blocks) to int8 codes,
// fp32 scales per sub-block (32 or 16 values) and fp32 min terms per 32 values (0 when the type has none).
// value = code * scale[sub] + bias[i / 32]. Returns the number of sub-blocks.

struct kn_unit {
    int8_t codes[KN_QK_K];
    float scale[16];
    float bias[8];
    int n_sub;
    int sub; // values per sub-block: 32 or 16
};

__attribute__((always_inline)) static inline void unpack_kscales(const void *blk, float *scale, float *bias) {
    __m256 sc, mn;
    kn_q4k_scales8(blk, &sc, &mn);
    _mm256_storeu_ps(scale, sc);
    _mm256_storeu_ps(bias, _mm256_sub_ps(_mm256_setzero_ps(), mn));
}

__attribute__((always_inline)) static inline void unpack_q4k(const struct kn_block_q4_k *b, struct kn_unit *u) {
    unpack_kscales(b, u->scale, u->bias);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        _mm256_storeu_si256((__m256i *)(u->codes + 64 * c), _mm256_and_si256(v, m4));
        _mm256_storeu_si256((__m256i *)(u->codes + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    }
    u->n_sub = 8;
    u->sub = 32;
}

__attribute__((always_inline)) static inline void unpack_q5k(const struct kn_block_q5_k *b, struct kn_unit *u) {
    unpack_kscales(b, u->scale, u->bias);
    const __m256i m4 = _mm256_set1_epi8(0x0F), b16 = _mm256_set1_epi8(0x10);
    __m256i hb = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int c = 0; c < 4; c++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        __m256i k0 = _mm256_set1_epi8((char)(1 << (2 * c))), k1 = _mm256_set1_epi8((char)(1 << (2 * c + 1)));
        __m256i h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, k0), k0), b16);
        __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, k1), k1), b16);
        _mm256_storeu_si256((__m256i *)(u->codes + 64 * c), _mm256_or_si256(_mm256_and_si256(v, m4), h0));
        _mm256_storeu_si256((__m256i *)(u->codes + 64 * c + 32),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), h1));
    }
    u->n_sub = 8;
    u->sub = 32;
}

__attribute__((always_inline)) static inline void unpack_q6k(const struct kn_block_q6_k *b, struct kn_unit *u) {
    float d = kn_h2f(b->d);
    __m256 vd = _mm256_set1_ps(d);
    __m128i s8 = _mm_loadu_si128((const __m128i *)b->scales);
    _mm256_storeu_ps(u->scale, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8))));
    _mm256_storeu_ps(u->scale + 8,
                     _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8)))));
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), o32 = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i q1 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
        __m256i q2 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
        __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
        __m256i q4 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
        int8_t *o = u->codes + 128 * h;
        _mm256_storeu_si256((__m256i *)(o), _mm256_sub_epi8(q1, o32));
        _mm256_storeu_si256((__m256i *)(o + 32), _mm256_sub_epi8(q2, o32));
        _mm256_storeu_si256((__m256i *)(o + 64), _mm256_sub_epi8(q3, o32));
        _mm256_storeu_si256((__m256i *)(o + 96), _mm256_sub_epi8(q4, o32));
    }
    memset(u->bias, 0, sizeof u->bias);
    u->n_sub = 16;
    u->sub = 16;
}

// 32 five-bit high bits (bit i of qh is value i's bit 4) spread to bytes of 0x10 / 0.
__attribute__((always_inline)) static inline __m256i q5_highbits(const uint8_t *qhp) {
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                         3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), idx);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(0x10));
}

// 16 bytes of nibbles -> 32 codes in value order (low nibbles are values 0..15, high nibbles 16..31).
__attribute__((always_inline)) static inline __m256i nibbles32(const uint8_t *qs) {
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

// nb (1..8) legacy blocks starting at p.
__attribute__((always_inline)) static inline void unpack_legacy(int type, const uint8_t *p, int nb, struct kn_unit *u) {
    for (int i = 0; i < nb; i++) {
        __m256i c;
        float d, m = 0.0f;
        switch (type) {
        case KN_Q4_0: {
            const struct kn_block_q4_0 *b = (const struct kn_block_q4_0 *)p + i;
            d = kn_h2f(b->d);
            c = _mm256_sub_epi8(nibbles32(b->qs), _mm256_set1_epi8(8));
        } break;
        case KN_Q4_1: {
            const struct kn_block_q4_1 *b = (const struct kn_block_q4_1 *)p + i;
            d = kn_h2f(b->d);
            m = kn_h2f(b->m);
            c = nibbles32(b->qs);
        } break;
        case KN_Q5_0: {
            const struct kn_block_q5_0 *b = (const struct kn_block_q5_0 *)p + i;
            d = kn_h2f(b->d);
            c = _mm256_sub_epi8(_mm256_or_si256(nibbles32(b->qs), q5_highbits(b->qh)), _mm256_set1_epi8(16));
        } break;
        case KN_Q5_1: {
            const struct kn_block_q5_1 *b = (const struct kn_block_q5_1 *)p + i;
            d = kn_h2f(b->d);
            m = kn_h2f(b->m);
            c = _mm256_or_si256(nibbles32(b->qs), q5_highbits(b->qh));
        } break;
        default: { // KN_Q8_0
            const struct kn_block_q8_0 *b = (const struct kn_block_q8_0 *)p + i;
            d = kn_h2f(b->d);
            c = _mm256_loadu_si256((const __m256i *)b->qs);
        } break;
        }
        _mm256_storeu_si256((__m256i *)(u->codes + 32 * i), c);
        u->scale[i] = d;
        u->bias[i] = m;
    }
    for (int i = nb; i < 8; i++) u->bias[i] = 0.0f;
    u->n_sub = nb;
    u->sub = 32;
}

// Unpacks the unit of 256 values (nb legacy blocks) at p.
__attribute__((always_inline)) static inline void kn_unpack_unit(int type, const uint8_t *p, int nb, struct kn_unit *u) {
    switch (type) {
    case KN_Q4_K: unpack_q4k((const struct kn_block_q4_k *)p, u); break;
    case KN_Q5_K: unpack_q5k((const struct kn_block_q5_k *)p, u); break;
    case KN_Q6_K: unpack_q6k((const struct kn_block_q6_k *)p, u); break;
    default: unpack_legacy(type, p, nb, u); break;
    }
}
#endif
