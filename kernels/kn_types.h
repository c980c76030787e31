// kernels/kn_types.h — GGML tensor type ids, quantized block layouts (as GGUF stores them), fp16/bf16 helpers.
// Shared by the GGUF reader, the CPU kernels and the CUDA kernels (plain C, no CUDA types).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define KN_HD __host__ __device__ static inline
#define KN_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KN_HD static inline
#ifdef __cplusplus
#define KN_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define KN_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
#endif

// GGML type ids as they appear in GGUF tensor infos.
enum kn_type {
    KN_F32 = 0,
    KN_F16 = 1,
    KN_Q4_0 = 2,
    KN_Q4_1 = 3,
    KN_Q5_0 = 6,
    KN_Q5_1 = 7,
    KN_Q8_0 = 8,
    KN_Q4_K = 12,
    KN_Q5_K = 13,
    KN_Q6_K = 14,
    KN_BF16 = 30,
    KN_TYPE_COUNT = 31,
};

#define KN_QK 32   // values per block, legacy quants
#define KN_QK_K 256 // values per super-block, k-quants
#define KN_K_SCALE_SIZE 12

typedef uint16_t kn_half; // IEEE fp16 bits
typedef uint16_t kn_bf16; // bfloat16 bits

// x = (q - 8) * d; qs: low nibbles are values 0..15, high nibbles values 16..31
struct kn_block_q4_0 { kn_half d; uint8_t qs[KN_QK / 2]; };
// x = q * d + m
struct kn_block_q4_1 { kn_half d; kn_half m; uint8_t qs[KN_QK / 2]; };
// x = (q - 16) * d, q = nibble | (bit j of qh) << 4
struct kn_block_q5_0 { kn_half d; uint8_t qh[4]; uint8_t qs[KN_QK / 2]; };
// x = q * d + m
struct kn_block_q5_1 { kn_half d; kn_half m; uint8_t qh[4]; uint8_t qs[KN_QK / 2]; };
// x = q * d
struct kn_block_q8_0 { kn_half d; int8_t qs[KN_QK]; };
// 8 sub-blocks of 32; 6-bit scales and mins packed in scales[12]; x = d*sc*q - dmin*m
struct kn_block_q4_k { kn_half d; kn_half dmin; uint8_t scales[KN_K_SCALE_SIZE]; uint8_t qs[KN_QK_K / 2]; };
struct kn_block_q5_k { kn_half d; kn_half dmin; uint8_t scales[KN_K_SCALE_SIZE]; uint8_t qh[KN_QK_K / 8]; uint8_t qs[KN_QK_K / 2]; };
// 16 sub-blocks of 16; x = d * scales[i] * (q - 32), q = 4 low bits from ql, 2 high bits from qh
struct kn_block_q6_k { uint8_t ql[KN_QK_K / 2]; uint8_t qh[KN_QK_K / 4]; int8_t scales[KN_QK_K / 16]; kn_half d; };

KN_STATIC_ASSERT(sizeof(struct kn_block_q4_0) == 18, "q4_0 size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q4_1) == 20, "q4_1 size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q5_0) == 22, "q5_0 size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q5_1) == 24, "q5_1 size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q8_0) == 34, "q8_0 size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q4_k) == 144, "q4_k size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q5_k) == 176, "q5_k size");
KN_STATIC_ASSERT(sizeof(struct kn_block_q6_k) == 210, "q6_k size");

// Values per block and bytes per block of a type; 0 for unsupported types.
KN_HD int kn_type_block_size(int type) {
    switch (type) {
    case KN_F32: case KN_F16: case KN_BF16: return 1;
    case KN_Q4_0: case KN_Q4_1: case KN_Q5_0: case KN_Q5_1: case KN_Q8_0: return KN_QK;
    case KN_Q4_K: case KN_Q5_K: case KN_Q6_K: return KN_QK_K;
    default: return 0;
    }
}
KN_HD size_t kn_type_block_bytes(int type) {
    switch (type) {
    case KN_F32: return 4;
    case KN_F16: case KN_BF16: return 2;
    case KN_Q4_0: return 18;
    case KN_Q4_1: return 20;
    case KN_Q5_0: return 22;
    case KN_Q5_1: return 24;
    case KN_Q8_0: return 34;
    case KN_Q4_K: return 144;
    case KN_Q5_K: return 176;
    case KN_Q6_K: return 210;
    default: return 0;
    }
}
// Bytes of one row of n values (n must be a multiple of the block size).
KN_HD size_t kn_row_bytes(int type, int64_t n) {
    int bs = kn_type_block_size(type);
    return bs ? (size_t)(n / bs) * kn_type_block_bytes(type) : 0;
}
#ifdef __cplusplus
extern "C" {
#endif
const char *kn_type_name(int type);
#ifdef __cplusplus
}
#endif // "Q4_K", ...; "?" when unknown (kernels/kn_types.c)

// fp16 <-> fp32, exact round-to-nearest-even, no hardware needed.
KN_HD float kn_half_to_float(kn_half h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
KN_HD kn_half kn_float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (kn_half)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (kn_half)(sign | 0x7c00u); // overflow -> inf
    if (ax < 0x38800000u) {                                   // subnormal or zero in fp16
        if (ax < 0x33000000u) return (kn_half)sign;
        uint32_t e = ax >> 23;                      // 102..112
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;  // value = m * 2^(e-150); fp16 unit is 2^-24
        uint32_t shift = 126 - e;                   // 14..24
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (kn_half)(sign | q);
    }
    uint32_t base = ((ax >> 13) - (112u << 10)) & 0xffffu;
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (base & 1))) base++;
    return (kn_half)(sign | base);
}
KN_HD float kn_bf16_to_float(kn_bf16 h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
KN_HD kn_bf16 kn_float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (kn_bf16)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (kn_bf16)(x >> 16);
}
