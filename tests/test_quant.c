// tests/test_quant.c — GGML block formats: fp16/bf16 conversion, hand-built blocks, oracle hashes, round trips.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kn_quant.h"
#include "kernels/kn_types.h"
#include "tests/test.h"

// ---- independent helpers (do not use the production conversions) -------------------------------------------

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double urand(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

static double grand(uint64_t *s) { // Box-Muller
    double u = urand(s), v = urand(s);
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

// fp16 bits -> value, from the IEEE definition (NaN reported through *is_nan).
static double half_value(uint16_t h, int *is_nan) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    *is_nan = e == 31 && m != 0;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = INFINITY;
    else v = ldexp(1024.0 + m, e - 25);
    return s ? -v : v;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static float half_f(const uint8_t *p) {
    int nan;
    return (float)half_value(rd16(p), &nan);
}

static float bits_f(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static uint32_t f_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

// Nearest fp16 to x by search over the (monotonic) positive encodings; ties to the even encoding.
static uint16_t half_ref(float x) {
    uint32_t b = f_bits(x);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    if (isnan(x)) return 0x7e00; // any NaN; callers compare NaN-ness only
    double a = fabs((double)x);
    // 65504 + half of its ulp (32 / 2 = 16): at or above rounds to infinity (65504 has an odd encoding).
    if (a >= 65520.0) return sign | 0x7c00;
    int lo = 0, hi = 0x7bff;
    while (lo < hi) { // largest encoding with value <= a
        int mid = (lo + hi + 1) / 2, nan;
        if (half_value((uint16_t)mid, &nan) <= a) lo = mid;
        else hi = mid - 1;
    }
    int nan;
    double vlo = half_value((uint16_t)lo, &nan);
    if (vlo == a || lo == 0x7bff) return sign | (uint16_t)lo;
    double vhi = half_value((uint16_t)(lo + 1), &nan);
    double dl = a - vlo, dh = vhi - a;
    int pick = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return sign | (uint16_t)pick;
}

// Nearest bf16 to x (ties to even); the encoding above the largest finite one stands for 2^128.
static uint16_t bf16_ref(float x) {
    uint32_t b = f_bits(x);
    if (isnan(x)) return 0x7fc0;
    uint16_t t = (uint16_t)(b >> 16);
    if ((b & 0xffff) == 0) return t;
    double a = fabs((double)x);
    double vlo = fabs((double)bits_f((uint32_t)t << 16));
    uint16_t up = (uint16_t)(t + 1);
    double vhi = ((up & 0x7fff) == 0x7f80) ? ldexp(1.0, 128) : fabs((double)bits_f((uint32_t)up << 16));
    double dl = a - vlo, dh = vhi - a;
    return dl < dh ? t : dh < dl ? up : ((t & 1) ? up : t);
}

// ---- fp16 / bf16 -------------------------------------------------------------------------------------------

static void test_half(void) {
    // Every fp16 encoding decodes to its IEEE value (via kn_dequant_row, which uses the shared helper).
    int bad = 0, bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint8_t src[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
        float got;
        kn_dequant_row(KN_F16, src, &got, 1);
        int nan;
        double want = half_value((uint16_t)h, &nan);
        if (nan ? !isnan(got) : ((double)got != want || !signbit(got) != !signbit(want))) bad++;
        // and every non-NaN value converts back to the same encoding
        if (!nan) {
            uint8_t back[2];
            kn_quantize_row(KN_F16, &got, back, 1);
            if (rd16(back) != h) bad_rt++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(bad_rt, 0);

    // Rounding: exact midpoints between neighbours (ties to even), a float ulp either side of them, and
    // random floats across the whole range, against the search-based reference.
    int bad_mid = 0, bad_rand = 0;
    for (int h = 0; h < 0x7bff; h++) {
        int nan;
        double a = half_value((uint16_t)h, &nan), b = half_value((uint16_t)(h + 1), &nan);
        float mid = (float)((a + b) / 2); // exact in fp32
        float probes[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            for (int sg = 0; sg < 2; sg++) {
                float x = sg ? -probes[k] : probes[k];
                if (kn_float_to_half(x) != half_ref(x)) bad_mid++;
            }
        }
    }
    uint64_t s = 7;
    for (int i = 0; i < 300000; i++) {
        uint32_t b = (uint32_t)splitmix(&s);
        float x = bits_f(b);
        if (isnan(x)) continue;
        if (kn_float_to_half(x) != half_ref(x)) bad_rand++;
    }
    CHECK_EQ_INT(bad_mid, 0);
    CHECK_EQ_INT(bad_rand, 0);

    // Named edge cases.
    CHECK_EQ_INT(kn_float_to_half(65504.0f), 0x7bff);
    CHECK_EQ_INT(kn_float_to_half(65519.99f), 0x7bff);
    CHECK_EQ_INT(kn_float_to_half(65520.0f), 0x7c00); // tie between 65504 (odd) and "65536" -> inf
    CHECK_EQ_INT(kn_float_to_half(1e9f), 0x7c00);
    CHECK_EQ_INT(kn_float_to_half(-INFINITY), 0xfc00);
    CHECK_EQ_INT(kn_float_to_half(-0.0f), 0x8000);
    CHECK_EQ_INT(kn_float_to_half(ldexpf(1.0f, -24)), 0x0001);      // smallest subnormal
    CHECK_EQ_INT(kn_float_to_half(ldexpf(1.0f, -25)), 0x0000);      // tie with 0 -> even (0)
    CHECK_EQ_INT(kn_float_to_half(ldexpf(1.5f, -25)), 0x0001);      // above the tie
    CHECK_EQ_INT(kn_float_to_half(ldexpf(3.0f, -25)), 0x0002);      // 1.5 units: tie -> even (2)
    CHECK_EQ_INT(kn_float_to_half(ldexpf(1.0f, -14)), 0x0400);      // smallest normal
    CHECK_EQ_INT(kn_float_to_half(ldexpf(1023.5f, -24)), 0x0400);   // rounds up into the normals
    CHECK_EQ_INT(kn_float_to_half(1.0f + ldexpf(1.0f, -11)), 0x3c00); // tie -> even (1.0)
    CHECK_EQ_INT(kn_float_to_half(1.0f + ldexpf(3.0f, -11)), 0x3c02); // tie -> even (1 + 2^-9)
    uint16_t hn = kn_float_to_half(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);
    CHECK(isnan(kn_half_to_float(0x7e00)) && isnan(kn_half_to_float(0xfc01)));
    CHECK(isinf(kn_half_to_float(0x7c00)) && kn_half_to_float(0xfc00) < 0);
    CHECK(kn_half_to_float(0x0001) == ldexpf(1.0f, -24));
    CHECK(kn_half_to_float(0x03ff) == ldexpf(1023.0f, -24));
}

static void test_bf16(void) {
    int bad_dec = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint8_t src[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
        float got;
        kn_dequant_row(KN_BF16, src, &got, 1);
        uint32_t want = h << 16;
        if (f_bits(got) != want) bad_dec++;
    }
    CHECK_EQ_INT(bad_dec, 0);
    int bad = 0;
    uint64_t s = 11;
    for (int i = 0; i < 300000; i++) {
        uint32_t b = (uint32_t)splitmix(&s);
        if (i % 3 == 0) b = (b & 0xffff0000u) | 0x8000u; // exact ties
        float x = bits_f(b);
        if (isnan(x)) continue;
        if (kn_float_to_bf16(x) != bf16_ref(x)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(kn_float_to_bf16(bits_f(0x3f808000u)), 0x3f80); // tie, even stays
    CHECK_EQ_INT(kn_float_to_bf16(bits_f(0x3f818000u)), 0x3f82); // tie, odd rounds up
    CHECK_EQ_INT(kn_float_to_bf16(bits_f(0x3f808001u)), 0x3f81);
    CHECK_EQ_INT(kn_float_to_bf16(bits_f(0x7f7fffffu)), 0x7f80); // FLT_MAX rounds to inf
    CHECK_EQ_INT(kn_float_to_bf16(INFINITY), 0x7f80);
    CHECK_EQ_INT(kn_float_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(kn_float_to_bf16(bits_f(0x00018000u)), 0x0002); // subnormal tie, odd -> up
    uint16_t n = kn_float_to_bf16(bits_f(0x7f800001u));           // signalling NaN must stay NaN
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
}

// ---- hand-built blocks --------------------------------------------------------------------------------------

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

// Value i of a Q4_K/Q5_K block straight from the format's definition: sub-block j = i/32 takes scale and
// min from the 12 scale bytes; value i's low 4 bits sit in qs byte 32*(i/64) + i%32, low nibble when
// (i/32) is even, and (Q5_K) its fifth bit is bit (i/32) of qh[i%32].
static void k_sub_scale(const uint8_t *sb, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = sb[j] & 0x3f;
        *mn = sb[4 + j] & 0x3f;
    } else {
        *sc = (sb[8 + j - 4] & 0x0f) + 16 * (sb[j - 4] >> 6);
        *mn = (sb[8 + j - 4] >> 4) + 16 * (sb[j] >> 6);
    }
}

static double q4k_value(const uint8_t *b, int i) {
    int sc, mn;
    k_sub_scale(b + 4, i / 32, &sc, &mn);
    uint8_t byte = b[16 + 32 * (i / 64) + i % 32];
    int q = (i / 32) % 2 ? byte >> 4 : byte & 15;
    return (double)half_f(b) * sc * q - (double)half_f(b + 2) * mn;
}

static double q5k_value(const uint8_t *b, int i) {
    int sc, mn;
    k_sub_scale(b + 4, i / 32, &sc, &mn);
    uint8_t byte = b[48 + 32 * (i / 64) + i % 32];
    int q = (i / 32) % 2 ? byte >> 4 : byte & 15;
    q += 16 * ((b[16 + i % 32] >> (i / 32)) & 1);
    return (double)half_f(b) * sc * q - (double)half_f(b + 2) * mn;
}

// Q6_K: value i in half h = i/128, r = i%128: low 4 bits from ql[64h + r%64] (low nibble if r < 64), top 2
// bits from qh[32h + r%32] at bit 2*(r/32); scale int8 scales[i/16]; d at byte 208.
static double q6k_value(const uint8_t *b, int i) {
    int h = i / 128, r = i % 128;
    uint8_t lb = b[64 * h + r % 64];
    int lo = r < 64 ? lb & 15 : lb >> 4;
    int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
    int q = lo + 16 * hi - 32;
    return (double)half_f(b + 208) * (int8_t)b[192 + i / 16] * q;
}

static void test_hand_blocks(void) {
    float y[256];
    // Q8_0: d = 0.5, q = -127, 3, 127, ...
    {
        uint8_t b[34] = {0};
        put16(b, 0x3800); // 0.5
        for (int i = 0; i < 32; i++) b[2 + i] = (uint8_t)(int8_t)(i * 9 - 140 < -127 ? -127 : i * 9 - 140);
        kn_dequant_row(KN_Q8_0, b, y, 32);
        int bad = 0;
        for (int i = 0; i < 32; i++) bad += y[i] != 0.5f * (int8_t)b[2 + i];
        CHECK_EQ_INT(bad, 0);
        CHECK(y[0] == -63.5f);
    }
    // Q4_0: d = -2, nibbles: value i = i%16 for i < 16, 15 - i%16 above; x = (q - 8) * d
    {
        uint8_t b[18] = {0};
        put16(b, 0xc000); // -2.0
        for (int i = 0; i < 16; i++) b[2 + i] = (uint8_t)(i | ((15 - i) << 4));
        kn_dequant_row(KN_Q4_0, b, y, 32);
        CHECK(y[0] == 16.0f && y[8] == 0.0f && y[15] == -14.0f);
        CHECK(y[16] == -14.0f && y[31] == 16.0f);
    }
    // Q4_1: d = 0.25, m = -1; x = q * d + m
    {
        uint8_t b[20] = {0};
        put16(b, 0x3400);
        put16(b + 2, 0xbc00);
        for (int i = 0; i < 16; i++) b[4 + i] = (uint8_t)(i | (15 << 4));
        kn_dequant_row(KN_Q4_1, b, y, 32);
        CHECK(y[0] == -1.0f && y[4] == 0.0f && y[15] == 2.75f && y[16] == 2.75f && y[31] == 2.75f);
    }
    // Q5_0: fifth bit of value i is bit i of the little-endian qh word. Set bits 0, 17 and 31.
    {
        uint8_t b[22] = {0};
        put16(b, 0x3c00); // 1.0
        b[2] = 0x01, b[4] = 0x02, b[5] = 0x80;
        for (int i = 0; i < 16; i++) b[6 + i] = 0x33; // every nibble 3
        kn_dequant_row(KN_Q5_0, b, y, 32);
        CHECK(y[0] == 3.0f);    // 3 + 16 - 16
        CHECK(y[1] == -13.0f);  // 3 - 16
        CHECK(y[17] == 3.0f && y[31] == 3.0f && y[16] == -13.0f && y[30] == -13.0f);
    }
    // Q5_1: d = 0.5, m = 2, qh bit 16 set, nibbles 15: value 16 = (15 + 16) * 0.5 + 2
    {
        uint8_t b[24] = {0};
        put16(b, 0x3800);
        put16(b + 2, 0x4000);
        b[6] = 0x01;
        for (int i = 0; i < 16; i++) b[8 + i] = 0xff;
        kn_dequant_row(KN_Q5_1, b, y, 32);
        CHECK(y[16] == 17.5f && y[0] == 9.5f && y[1] == 9.5f);
    }
    // Q4_K: d = 0.5, dmin = 0.25; sub-block 0: scale 3, min 2; sub-block 5: scale 45 (0b101101), min 37
    // (0b100101) split into low nibbles in byte 8+1 and top bits in bytes 1 (scale) and 5 (min).
    {
        uint8_t b[144] = {0};
        put16(b, 0x3800);
        put16(b + 2, 0x3400);
        uint8_t *sc = b + 4;
        sc[0] = 3, sc[4] = 2;
        sc[9] = (uint8_t)((45 & 15) | ((37 & 15) << 4));
        sc[1] = (uint8_t)((45 >> 4) << 6) | 7; // sub-block 1: scale 7, top bits of sub-block 5's scale
        sc[5] = (uint8_t)((37 >> 4) << 6) | 1; // sub-block 1: min 1, top bits of sub-block 5's min
        for (int i = 0; i < 128; i++) b[16 + i] = (uint8_t)((i * 7) & 0xff);
        kn_dequant_row(KN_Q4_K, b, y, 256);
        int bad = 0;
        for (int i = 0; i < 256; i++) bad += fabs(y[i] - q4k_value(b, i)) > 1e-6;
        CHECK_EQ_INT(bad, 0);
        // value 0: q = 0 -> -0.25*2; value 33 (sub-block 1, high nibble of byte 1 = 7>>4 = 0): -0.25
        CHECK(y[0] == -0.5f && y[33] == -0.25f);
        // value 160 (sub-block 5 = high nibbles of chunk 2): byte 16+64 = (64*7)&255 = 192 -> q = 12
        CHECK(y[160] == 0.5f * 45 * 12 - 0.25f * 37);
    }
    // Q5_K: same scales; qh bit c of qh[l] adds 16 to value 32c + l.
    {
        uint8_t b[176] = {0};
        put16(b, 0x3c00);
        put16(b + 2, 0x3800);
        uint8_t *sc = b + 4;
        for (int j = 0; j < 4; j++) sc[j] = (uint8_t)(j + 1), sc[4 + j] = (uint8_t)j;
        for (int j = 0; j < 4; j++) sc[8 + j] = (uint8_t)(0x21 + j); // sub-blocks 4..7: scale 1+j, min 2
        for (int l = 0; l < 32; l++) b[16 + l] = (uint8_t)(l * 37);
        for (int i = 0; i < 128; i++) b[48 + i] = (uint8_t)(i * 13 + 5);
        kn_dequant_row(KN_Q5_K, b, y, 256);
        int bad = 0;
        for (int i = 0; i < 256; i++) bad += fabs(y[i] - q5k_value(b, i)) > 1e-6;
        CHECK_EQ_INT(bad, 0);
        // value 1: byte 48+1 = 18 -> low nibble 2, qh[1] = 37 (bit 0 set) -> q = 18; scale 1, min 0
        CHECK(y[1] == 18.0f);
    }
    // Q6_K: d = 0.5, scales[j] = j - 8
    {
        uint8_t b[210] = {0};
        for (int i = 0; i < 128; i++) b[i] = (uint8_t)(i * 29 + 3);
        for (int i = 0; i < 64; i++) b[128 + i] = (uint8_t)(i * 53 + 1);
        for (int j = 0; j < 16; j++) b[192 + j] = (uint8_t)(int8_t)(j - 8);
        put16(b + 208, 0x3800);
        kn_dequant_row(KN_Q6_K, b, y, 256);
        int bad = 0;
        for (int i = 0; i < 256; i++) bad += fabs(y[i] - q6k_value(b, i)) > 1e-6;
        CHECK_EQ_INT(bad, 0);
        // value 0: ql[0] = 3 -> lo 3; qh[0] = 1 -> hi 1; q = 3 + 16 - 32 = -13; scale -8 -> 52
        CHECK(y[0] == 52.0f);
    }
}

// ---- oracle: random blocks dequantised by the gguf Python package (gguf.dequantize), hashed ------------------
// The blocks are pseudo-random bytes (splitmix64 from seed 1000*type + k) with their fp16 scale fields
// replaced by values in [2^-4, 2) (min fields of Q4_1/Q5_1 with a random sign). The constants were
// computed once with gguf-py 0.x / numpy: FNV-1a over the little-endian fp32 outputs.

struct oracle {
    int type;
    uint64_t hash;
    int n;
    float first, last;
};

static const struct oracle oracles[] = {
    {KN_Q4_0, 0x8f6d86ad07f730dfull, 128, 0.6878662109375f, -0.493408203125f},
    {KN_Q4_1, 0x7e9ca2f732f3fbaeull, 128, 0.2113037109375f, 0.86993408203125f},
    {KN_Q5_0, 0xfa94cdf3ccae3a9dull, 128, 1.1982421875f, 0.47637939453125f},
    {KN_Q5_1, 0x502638259db5e419ull, 128, 1.64703369140625f, 1.038818359375f},
    {KN_Q8_0, 0x7f731f99d88fd21eull, 128, 2.36224365234375f, 0.56689453125f},
    {KN_Q4_K, 0x0727c8869fd605daull, 1024, 28.81524658203125f, 35.37109375f},
    {KN_Q5_K, 0x67cfcea3813632f5ull, 1024, 64.05908203125f, -2.79498291015625f},
    {KN_Q6_K, 0xa8943c8b443975deull, 1024, 228.9012451171875f, 12.26580810546875f},
};

static void oracle_block(int type, uint64_t seed, uint8_t *b) {
    size_t nb = kn_type_block_bytes(type);
    uint64_t s = seed;
    for (size_t o = 0; o < nb; o += 8) {
        uint64_t r = splitmix(&s);
        for (size_t k = 0; k < 8 && o + k < nb; k++) b[o + k] = (uint8_t)(r >> (8 * k));
    }
    int d_off[2] = {0, -1}, m_off = -1;
    switch (type) {
    case KN_Q4_1: case KN_Q5_1: m_off = 2; break;
    case KN_Q4_K: case KN_Q5_K: d_off[1] = 2; break;
    case KN_Q6_K: d_off[0] = 208; break;
    default: break;
    }
    for (int k = 0; k < 2; k++) {
        if (d_off[k] < 0) continue;
        uint64_t r = splitmix(&s);
        put16(b + d_off[k], (uint16_t)(0x2c00 | (r & 0x0fff)));
    }
    if (m_off >= 0) {
        uint64_t r = splitmix(&s);
        put16(b + m_off, (uint16_t)(0x2c00 | (r & 0x0fff) | (((r >> 12) & 1) << 15)));
    }
}

static void test_oracle(void) {
    for (size_t t = 0; t < sizeof oracles / sizeof oracles[0]; t++) {
        const struct oracle *o = &oracles[t];
        size_t bb = kn_type_block_bytes(o->type);
        int bs = kn_type_block_size(o->type);
        uint8_t blocks[4 * 210];
        for (int k = 0; k < 4; k++) oracle_block(o->type, 1000ull * (uint64_t)o->type + (uint64_t)k, blocks + k * bb);
        float y[1024];
        CHECK_EQ_INT(kn_dequant_row(o->type, blocks, y, 4 * bs), 0);
        uint64_t h = 0xcbf29ce484222325ull;
        for (int i = 0; i < o->n; i++) {
            uint32_t b = f_bits(y[i]);
            for (int k = 0; k < 4; k++) h = (h ^ ((b >> (8 * k)) & 0xff)) * 0x100000001b3ull;
        }
        CHECK_MSG(h == o->hash, "%s: hash %016llx, oracle %016llx", kn_type_name(o->type), (unsigned long long)h,
                  (unsigned long long)o->hash);
        CHECK(y[0] == o->first && y[o->n - 1] == o->last);
    }
}

// ---- round trips --------------------------------------------------------------------------------------------

enum dist { D_GAUSS, D_UNIFORM_POS, D_OUTLIER, D_CONST, D_ZERO, D_NEG, D_TINY, D_COUNT };

static void fill(float *x, int n, int dist, uint64_t *s) {
    for (int i = 0; i < n; i++) {
        switch (dist) {
        case D_GAUSS: x[i] = (float)grand(s); break;
        case D_UNIFORM_POS: x[i] = (float)(3.0 * urand(s) + 0.5); break;
        case D_OUTLIER: x[i] = (float)(0.02 * grand(s)) + (i % 97 == 5 ? 3.0f : 0.0f); break;
        case D_CONST: x[i] = 0.75f; break;
        case D_ZERO: x[i] = 0.0f; break;
        case D_NEG: x[i] = (float)(-1.0 - urand(s)); break;
        case D_TINY: x[i] = (float)(1e-3 * grand(s)); break;
        default: break;
        }
    }
}

// Distance of t outside [lo, hi] (0 inside).
static double outside(double t, double lo, double hi) { return t < lo ? lo - t : t > hi ? t - hi : 0.0; }

// Worst per-value excess of |error| over what the block's stored parameters allow: half a step of the
// value's (effective) scale plus the distance by which the value lies outside the representable range.
// Decodes block parameters with the test's own helpers.
static double block_excess(int type, const uint8_t *b, const float *x, const float *y) {
    double worst = 0;
    int bs = kn_type_block_size(type);
    for (int i = 0; i < bs; i++) {
        double step, t, lo, hi;
        switch (type) {
        case KN_Q4_0: case KN_Q5_0: {
            double d = half_f(b);
            int off = type == KN_Q4_0 ? 8 : 16;
            step = fabs(d);
            t = d != 0 ? x[i] / d : 0;
            lo = -off, hi = off - 1;
            break;
        }
        case KN_Q4_1: case KN_Q5_1: {
            double d = half_f(b), m = half_f(b + 2);
            step = d;
            t = d != 0 ? (x[i] - m) / d : 0;
            lo = 0, hi = type == KN_Q4_1 ? 15 : 31;
            break;
        }
        case KN_Q8_0: {
            double d = half_f(b);
            step = d, t = d != 0 ? x[i] / d : 0, lo = -127, hi = 127;
            break;
        }
        case KN_Q4_K: case KN_Q5_K: {
            int sc, mn;
            k_sub_scale(b + 4, i / 32, &sc, &mn);
            double es = (double)half_f(b) * sc, em = (double)half_f(b + 2) * mn;
            step = es, t = es != 0 ? (x[i] + em) / es : 0;
            lo = 0, hi = type == KN_Q4_K ? 15 : 31;
            if (es == 0) { // only the min is representable
                step = 0, t = 0, lo = hi = 0;
                double e = fabs(x[i] - y[i]) - fabs(x[i] + em);
                if (e > worst) worst = e;
                continue;
            }
            break;
        }
        case KN_Q6_K: {
            double es = (double)half_f(b + 208) * (int8_t)b[192 + i / 16];
            if (es == 0) {
                double e = fabs(x[i] - y[i]) - fabs(x[i]);
                if (e > worst) worst = e;
                continue;
            }
            step = fabs(es), t = x[i] / es, lo = -32, hi = 31;
            break;
        }
        default: return 0;
        }
        double allowed = step * (0.5 + outside(t, lo, hi)) + 1e-4 * step + 1e-7 * fabs(x[i]) + 1e-12;
        double e = fabs((double)x[i] - y[i]) - allowed;
        if (e > worst) worst = e;
    }
    return worst;
}

static void test_round_trips(void) {
    static const int types[] = {KN_F32, KN_F16, KN_BF16, KN_Q4_0, KN_Q4_1, KN_Q5_0,
                                KN_Q5_1, KN_Q8_0, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    // Relative RMSE bounds on N(0,1) data (measured values are well below; see the printout).
    static const double rmse_max[] = {0, 4e-4, 3e-3, 0.11, 0.09, 0.055, 0.045, 0.0065, 0.085, 0.042, 0.02};
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *q = malloc(N * 4);
    uint64_t s = 12345;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int type = types[k];
        int bs = kn_type_block_size(type);
        size_t bb = kn_type_block_bytes(type);
        double worst = 0, rmse_gauss = 0;
        int exact_bad = 0;
        for (int dist = 0; dist < D_COUNT; dist++) {
            fill(x, N, dist, &s);
            CHECK_EQ_INT(kn_quantize_row(type, x, q, N), 0);
            CHECK_EQ_INT(kn_dequant_row(type, q, y, N), 0);
            double se = 0, sx = 0;
            for (int i = 0; i < N; i++) {
                se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
                sx += (double)x[i] * x[i];
            }
            if (dist == D_GAUSS) rmse_gauss = sqrt(se / sx);
            if (type == KN_F32 || type == KN_F16 || type == KN_BF16) {
                double rel = type == KN_F32 ? 0 : type == KN_F16 ? ldexp(1, -11) : ldexp(1, -8);
                for (int i = 0; i < N; i++) {
                    double tol = rel * fabs(x[i]) + (type == KN_F16 ? ldexp(1, -25) : 0);
                    if (fabs((double)x[i] - y[i]) > tol) exact_bad++;
                }
            } else {
                for (int i = 0; i < N; i += bs) {
                    double e = block_excess(type, q + (size_t)(i / bs) * bb, x + i, y + i);
                    if (e > worst) worst = e;
                }
            }
            // Blocks that hold a single value (zero, a constant) must come back close to exactly.
            if (dist == D_ZERO || dist == D_CONST) {
                double maxe = 0;
                for (int i = 0; i < N; i++) maxe = fmax(maxe, fabs((double)x[i] - y[i]));
                CHECK_MSG(maxe <= 1e-3 * fabs(x[0]), "%s dist %d: max err %g", kn_type_name(type), dist, maxe);
            }
        }
        printf("%-5s rel rmse on N(0,1): %.5f\n", kn_type_name(type), rmse_gauss);
        CHECK_EQ_INT(exact_bad, 0);
        CHECK_MSG(worst <= 0, "%s: error exceeds the format's bound by %g", kn_type_name(type), worst);
        CHECK_MSG(rmse_gauss <= rmse_max[k], "%s: rel rmse %g > %g", kn_type_name(type), rmse_gauss, rmse_max[k]);
    }
    free(x);
    free(y);
    free(q);
}

// Scale choices are as the formats intend: the largest value is (nearly) exact in symmetric formats.
static void test_scale_choice(void) {
    float x[256], y[256];
    uint8_t q[256];
    uint64_t s = 99;
    for (int i = 0; i < 32; i++) x[i] = (float)grand(&s);
    x[7] = -5.0f;
    kn_quantize_row(KN_Q4_0, x, q, 32);
    kn_dequant_row(KN_Q4_0, q, y, 32);
    CHECK_NEAR(y[7], -5.0f, 5e-3);
    kn_quantize_row(KN_Q8_0, x, q, 32);
    kn_dequant_row(KN_Q8_0, q, y, 32);
    CHECK_NEAR(y[7], -5.0f, 5e-3);
    kn_quantize_row(KN_Q5_1, x, q, 32);
    kn_dequant_row(KN_Q5_1, q, y, 32);
    CHECK_NEAR(y[7], -5.0f, 5e-3);
}

static void test_api(void) {
    float y[32];
    uint8_t q[64] = {0};
    CHECK(kn_type_supported(KN_Q4_K) && kn_type_supported(KN_BF16) && kn_type_supported(KN_F32));
    CHECK(!kn_type_supported(10) && !kn_type_supported(-1) && !kn_type_supported(1000));
    CHECK_EQ_INT(kn_dequant_row(10, q, y, 32), -1);
    CHECK_EQ_INT(kn_quantize_row(10, y, q, 32), -1);
    CHECK_EQ_INT(kn_dequant_row(KN_Q8_0, q, y, 31), -1);
    CHECK_EQ_INT(kn_quantize_row(KN_Q4_K, y, q, 32), -1);
    CHECK(!strcmp(kn_type_name(KN_Q4_K), "Q4_K") && !strcmp(kn_type_name(10), "Q2_K"));
    CHECK(!strcmp(kn_type_name(KN_BF16), "BF16") && !strcmp(kn_type_name(-3), "?") && !strcmp(kn_type_name(500), "?"));
}

// NaN, infinities and huge values must not crash or hit undefined conversions (run under UBSan).
static void test_degenerate(void) {
    static const int types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_Q8_0, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    float x[256], y[256];
    uint8_t q[8 * 34]; // 256 values at the widest of these formats (Q8_0)
    const float specials[] = {NAN, INFINITY, -INFINITY, 1e30f, -3e38f, 1e-40f};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int ok = 1;
        for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
            for (int i = 0; i < 256; i++) x[i] = (float)(i % 7) * 0.1f - 0.3f;
            x[37] = specials[k];
            ok &= kn_quantize_row(types[t], x, q, 256) == 0 && kn_dequant_row(types[t], q, y, 256) == 0;
        }
        CHECK(ok);
    }
}

static void bench_q4k(void) {
    enum { N = 256 * 4096 };
    float *x = malloc(N * sizeof *x);
    uint8_t *q = malloc(N);
    uint64_t s = 5;
    for (int i = 0; i < N; i++) x[i] = (float)(0.02 * grand(&s));
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    kn_quantize_row(KN_Q4_K, x, q, N);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    printf("Q4_K quantize: %.1f ns/value (one thread)\n", 1e9 * dt / N);
    free(x);
    free(q);
}

int main(void) {
    test_api();
    test_half();
    test_bf16();
    test_hand_blocks();
    test_oracle();
    test_round_trips();
    test_scale_choice();
    test_degenerate();
    bench_q4k();
    return test_done();
}
