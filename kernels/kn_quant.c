// kernels/kn_quant.c — scalar reference dequantisation and quantisation of the GGML block types we support.
#include "kernels/kn_quant.h"

#include <math.h>
#include <string.h>

int kn_type_supported(int type) { return kn_type_block_bytes(type) != 0; }

// Nearest integer to v, clamped to [lo, hi]. Clamping happens in float so that NaN (which fails both
// comparisons and lands on lo) or a huge ratio from a degenerate scale never reaches an out-of-range
// float-to-int conversion. How exact halves round is irrelevant to the formats.
static inline int kq_qclamp(float v, int lo, int hi) {
    float r = floorf(v + 0.5f);
    r = r > (float)lo ? r : (float)lo;
    r = r < (float)hi ? r : (float)hi;
    return (int)r;
}

// fp32 -> fp16 -> fp32: the value a stored fp16 scale will decode to.
static inline float kq_fp16_round(float v) { return kn_half_to_float(kn_float_to_half(v)); }

// ---- 6-bit scale/min packing shared by Q4_K and Q5_K ------------------------------------------------
// Sub-blocks 0..3 keep their 6-bit scale in bytes 0..3 and min in bytes 4..7 (low 6 bits). Sub-blocks 4..7
// keep their low 4 bits in bytes 8..11 (scale in the low nibble, min in the high one) and their top 2 bits
// in the spare top bits of bytes 0..3 (scale) and 4..7 (min).
static inline void kq_scale_min_get(const uint8_t *p, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = p[j] & 63;
        *m = p[j + 4] & 63;
    } else {
        *sc = (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4);
        *m = (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
    }
}

static void kq_scale_min_put(uint8_t *p, const int *sc, const int *m) {
    memset(p, 0, KN_K_SCALE_SIZE);
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(sc[j] & 63);
        p[j + 4] = (uint8_t)(m[j] & 63);
    }
    for (int j = 4; j < 8; j++) {
        p[j + 4] = (uint8_t)((sc[j] & 15) | ((m[j] & 15) << 4));
        p[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
        p[j] |= (uint8_t)((m[j] >> 4) << 6);
    }
}

// ---- dequantisation (one block each) ------------------------------------------------------------------

static void dq_q4_0(const struct kn_block_q4_0 *b, float *y) {
    float d = kn_half_to_float(b->d);
    for (int j = 0; j < KN_QK / 2; j++) {
        y[j] = (float)((b->qs[j] & 15) - 8) * d;
        y[j + KN_QK / 2] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const struct kn_block_q4_1 *b, float *y) {
    float d = kn_half_to_float(b->d), m = kn_half_to_float(b->m);
    for (int j = 0; j < KN_QK / 2; j++) {
        y[j] = (float)(b->qs[j] & 15) * d + m;
        y[j + KN_QK / 2] = (float)(b->qs[j] >> 4) * d + m;
    }
}

// Fifth bit of value i (0..31) of a Q5_0/Q5_1 block: bit i of the little-endian 32-bit qh.
static inline int q5_hbit(const uint8_t *qh, int i) { return (qh[i >> 3] >> (i & 7)) & 1; }

static void dq_q5_0(const struct kn_block_q5_0 *b, float *y) {
    float d = kn_half_to_float(b->d);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = (b->qs[j] & 15) | (q5_hbit(b->qh, j) << 4);
        int hi = (b->qs[j] >> 4) | (q5_hbit(b->qh, j + KN_QK / 2) << 4);
        y[j] = (float)(lo - 16) * d;
        y[j + KN_QK / 2] = (float)(hi - 16) * d;
    }
}

static void dq_q5_1(const struct kn_block_q5_1 *b, float *y) {
    float d = kn_half_to_float(b->d), m = kn_half_to_float(b->m);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = (b->qs[j] & 15) | (q5_hbit(b->qh, j) << 4);
        int hi = (b->qs[j] >> 4) | (q5_hbit(b->qh, j + KN_QK / 2) << 4);
        y[j] = (float)lo * d + m;
        y[j + KN_QK / 2] = (float)hi * d + m;
    }
}

static void dq_q8_0(const struct kn_block_q8_0 *b, float *y) {
    float d = kn_half_to_float(b->d);
    for (int j = 0; j < KN_QK; j++) y[j] = (float)b->qs[j] * d;
}

// Q4_K: four chunks of 64 values; chunk c uses sub-blocks 2c (low nibbles of qs[32c..32c+31]) and 2c+1
// (high nibbles of the same bytes).
static void dq_q4_k(const struct kn_block_q4_k *b, float *y) {
    float d = kn_half_to_float(b->d), dmin = kn_half_to_float(b->dmin);
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        kq_scale_min_get(b->scales, 2 * c, &sc0, &m0);
        kq_scale_min_get(b->scales, 2 * c + 1, &sc1, &m1);
        float d0 = d * (float)sc0, o0 = dmin * (float)m0;
        float d1 = d * (float)sc1, o1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * c;
        float *yc = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            yc[l] = d0 * (float)(q[l] & 15) - o0;
            yc[l + 32] = d1 * (float)(q[l] >> 4) - o1;
        }
    }
}

// Q5_K: as Q4_K, plus a fifth bit per value: bit 2c (first half of chunk c) or 2c+1 (second half) of qh[l].
static void dq_q5_k(const struct kn_block_q5_k *b, float *y) {
    float d = kn_half_to_float(b->d), dmin = kn_half_to_float(b->dmin);
    for (int c = 0; c < 4; c++) {
        int sc0, m0, sc1, m1;
        kq_scale_min_get(b->scales, 2 * c, &sc0, &m0);
        kq_scale_min_get(b->scales, 2 * c + 1, &sc1, &m1);
        float d0 = d * (float)sc0, o0 = dmin * (float)m0;
        float d1 = d * (float)sc1, o1 = dmin * (float)m1;
        const uint8_t *q = b->qs + 32 * c;
        float *yc = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            int lo = (q[l] & 15) | (((b->qh[l] >> (2 * c)) & 1) << 4);
            int hi = (q[l] >> 4) | (((b->qh[l] >> (2 * c + 1)) & 1) << 4);
            yc[l] = d0 * (float)lo - o0;
            yc[l + 32] = d1 * (float)hi - o1;
        }
    }
}

// Q6_K: two halves of 128 values. In half h, for l < 32, the four values l, l+32, l+64, l+96 take their
// low 4 bits from ql[64h + l] (low, -), ql[64h + 32 + l] (low), ql[64h + l] (high), ql[64h + 32 + l] (high)
// and their top 2 bits from qh[32h + l] at bit offsets 0, 2, 4, 6. Value i uses scales[i / 16].
static void dq_q6_k(const struct kn_block_q6_k *b, float *y) {
    float d = kn_half_to_float(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        float *yh = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            int q0 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            int s = l / 16;
            yh[l] = d * (float)sc[s] * (float)q0;
            yh[l + 32] = d * (float)sc[s + 2] * (float)q1;
            yh[l + 64] = d * (float)sc[s + 4] * (float)q2;
            yh[l + 96] = d * (float)sc[s + 6] * (float)q3;
        }
    }
}

int kn_dequant_row(int type, const void *src, float *dst, int64_t n) {
    int bs = kn_type_block_size(type);
    if (!bs || n < 0 || n % bs) return -1;
    int64_t nb = n / bs;
    switch (type) {
    case KN_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
    case KN_F16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            kn_half h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = kn_half_to_float(h);
        }
        return 0;
    }
    case KN_BF16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            kn_bf16 h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = kn_bf16_to_float(h);
        }
        return 0;
    }
    case KN_Q4_0: for (int64_t i = 0; i < nb; i++) dq_q4_0((const struct kn_block_q4_0 *)src + i, dst + i * bs); return 0;
    case KN_Q4_1: for (int64_t i = 0; i < nb; i++) dq_q4_1((const struct kn_block_q4_1 *)src + i, dst + i * bs); return 0;
    case KN_Q5_0: for (int64_t i = 0; i < nb; i++) dq_q5_0((const struct kn_block_q5_0 *)src + i, dst + i * bs); return 0;
    case KN_Q5_1: for (int64_t i = 0; i < nb; i++) dq_q5_1((const struct kn_block_q5_1 *)src + i, dst + i * bs); return 0;
    case KN_Q8_0: for (int64_t i = 0; i < nb; i++) dq_q8_0((const struct kn_block_q8_0 *)src + i, dst + i * bs); return 0;
    case KN_Q4_K: for (int64_t i = 0; i < nb; i++) dq_q4_k((const struct kn_block_q4_k *)src + i, dst + i * bs); return 0;
    case KN_Q5_K: for (int64_t i = 0; i < nb; i++) dq_q5_k((const struct kn_block_q5_k *)src + i, dst + i * bs); return 0;
    case KN_Q6_K: for (int64_t i = 0; i < nb; i++) dq_q6_k((const struct kn_block_q6_k *)src + i, dst + i * bs); return 0;
    default: return -1;
    }
}

// ---- quantisation -------------------------------------------------------------------------------------

// Symmetric legacy blocks (Q4_0, Q5_0): the value of largest magnitude maps to code 0 (x = -half * d), so
// its sign picks the sign of d and the opposite extreme loses at most one step to clamping.
static float q_sym_scale(const float *x, int half) {
    float amax = 0.0f, vmax = 0.0f;
    for (int j = 0; j < KN_QK; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            vmax = x[j];
        }
    }
    return vmax / (float)-half;
}

static void q_q4_0(const float *x, struct kn_block_q4_0 *b) {
    float d = kq_fp16_round(q_sym_scale(x, 8));
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = kq_qclamp(x[j] * id, -8, 7) + 8;
        int hi = kq_qclamp(x[j + KN_QK / 2] * id, -8, 7) + 8;
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void q_q5_0(const float *x, struct kn_block_q5_0 *b) {
    float d = kq_fp16_round(q_sym_scale(x, 16));
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    memset(b->qh, 0, sizeof b->qh);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = kq_qclamp(x[j] * id, -16, 15) + 16;
        int hi = kq_qclamp(x[j + KN_QK / 2] * id, -16, 15) + 16;
        b->qs[j] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
        int jh = j + KN_QK / 2;
        b->qh[j >> 3] |= (uint8_t)((lo >> 4) << (j & 7));
        b->qh[jh >> 3] |= (uint8_t)((hi >> 4) << (jh & 7));
    }
}

// Asymmetric legacy blocks (Q4_1, Q5_1): x = q * d + m over [min, max].
static void q_affine_params(const float *x, int nmax, float *d, float *m) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < KN_QK; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *m = kq_fp16_round(lo);
    *d = kq_fp16_round((hi - lo) / (float)nmax);
}

static void q_q4_1(const float *x, struct kn_block_q4_1 *b) {
    float d, m;
    q_affine_params(x, 15, &d, &m);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    b->m = kn_float_to_half(m);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = kq_qclamp((x[j] - m) * id, 0, 15);
        int hi = kq_qclamp((x[j + KN_QK / 2] - m) * id, 0, 15);
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void q_q5_1(const float *x, struct kn_block_q5_1 *b) {
    float d, m;
    q_affine_params(x, 31, &d, &m);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    b->m = kn_float_to_half(m);
    memset(b->qh, 0, sizeof b->qh);
    for (int j = 0; j < KN_QK / 2; j++) {
        int lo = kq_qclamp((x[j] - m) * id, 0, 31);
        int hi = kq_qclamp((x[j + KN_QK / 2] - m) * id, 0, 31);
        b->qs[j] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
        int jh = j + KN_QK / 2;
        b->qh[j >> 3] |= (uint8_t)((lo >> 4) << (j & 7));
        b->qh[jh >> 3] |= (uint8_t)((hi >> 4) << (jh & 7));
    }
}

static void q_q8_0(const float *x, struct kn_block_q8_0 *b) {
    float amax = 0.0f;
    for (int j = 0; j < KN_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = kq_fp16_round(amax / 127.0f);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    for (int j = 0; j < KN_QK; j++) b->qs[j] = (int8_t)kq_qclamp(x[j] * id, -127, 127);
}

// Fits x[0..n) ≈ s * q - m with integer q in [0, nmax], s >= 0 and m >= 0 (the range always covers 0, as
// the k-quant formats store the min as a non-negative offset). Starts from min/max and alternates
// "best codes for (s, m)" with "least-squares (s, m) for those codes"; each step can only lower the error.
static void kq_fit_affine(const float *x, int n, int nmax, float *s_out, float *m_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    if (lo > 0.0f) lo = 0.0f;
    if (!(hi > lo)) { // constant block (or all values <= 0 equal): the min alone represents it
        *s_out = 0.0f;
        *m_out = -lo;
        return;
    }
    float s = (hi - lo) / (float)nmax, b = lo; // x ≈ s*q + b, b <= 0
    for (int it = 0; it < 3; it++) {
        float is = 1.0f / s;
        float sq = 0, sqq = 0, sx = 0, sxq = 0;
        for (int i = 0; i < n; i++) {
            float q = (float)kq_qclamp((x[i] - b) * is, 0, nmax);
            sq += q;
            sqq += q * q;
            sx += x[i];
            sxq += x[i] * q;
        }
        float det = (float)n * sqq - sq * sq;
        float ns, nb;
        if (det <= 0.0f) break;
        ns = ((float)n * sxq - sq * sx) / det;
        nb = (sx - ns * sq) / (float)n;
        if (nb > 0.0f) { // constrained: offset pinned at 0
            nb = 0.0f;
            ns = sqq > 0.0f ? sxq / sqq : 0.0f;
        }
        if (!(ns > 0.0f)) break;
        s = ns;
        b = nb;
    }
    *s_out = s;
    *m_out = -b;
}

// Shared by Q4_K and Q5_K: fits the 8 sub-blocks, quantises their scales and mins to 6 bits against the
// fp16 super-block d and dmin, then picks each value's code against the scale and min as stored.
static void kq_quant_k_affine(const float *x, int nmax, kn_half *d_out, kn_half *dmin_out, uint8_t *scales,
                              uint8_t *codes /* 256 */) {
    float s[8], m[8], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        kq_fit_affine(x + 32 * j, 32, nmax, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, m[j]);
    }
    float d = kq_fp16_round(smax / 63.0f), dmin = kq_fp16_round(mmax / 63.0f);
    float id = d > 0.0f ? 1.0f / d : 0.0f, idmin = dmin > 0.0f ? 1.0f / dmin : 0.0f;
    int sc[8], mq[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = kq_qclamp(s[j] * id, 0, 63);
        mq[j] = kq_qclamp(m[j] * idmin, 0, 63);
    }
    *d_out = kn_float_to_half(d);
    *dmin_out = kn_float_to_half(dmin);
    kq_scale_min_put(scales, sc, mq);
    for (int j = 0; j < 8; j++) {
        float es = d * (float)sc[j], em = dmin * (float)mq[j];
        float ies = es > 0.0f ? 1.0f / es : 0.0f;
        for (int i = 0; i < 32; i++)
            codes[32 * j + i] = (uint8_t)kq_qclamp((x[32 * j + i] + em) * ies, 0, nmax);
    }
}

static void q_q4_k(const float *x, struct kn_block_q4_k *b) {
    uint8_t q[KN_QK_K];
    kq_quant_k_affine(x, 15, &b->d, &b->dmin, b->scales, q);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

static void q_q5_k(const float *x, struct kn_block_q5_k *b) {
    uint8_t q[KN_QK_K];
    kq_quant_k_affine(x, 31, &b->d, &b->dmin, b->scales, q);
    memset(b->qh, 0, sizeof b->qh);
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
            b->qs[32 * c + l] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
            b->qh[l] |= (uint8_t)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
        }
    }
}

// Fits x[0..16) ≈ s * q with integer q in [-32, 31]: the largest magnitude maps to -32, then a few
// alternating code / least-squares-scale steps.
static float kq_fit_sym6(const float *x) {
    float amax = 0.0f, vmax = 0.0f;
    for (int i = 0; i < 16; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    if (amax == 0.0f) return 0.0f;
    float s = vmax / -32.0f;
    for (int it = 0; it < 2; it++) {
        float is = 1.0f / s, sxq = 0, sqq = 0;
        for (int i = 0; i < 16; i++) {
            float q = (float)kq_qclamp(x[i] * is, -32, 31);
            sxq += x[i] * q;
            sqq += q * q;
        }
        if (!(sqq > 0.0f)) break;
        float ns = sxq / sqq;
        if (ns == 0.0f) break;
        s = ns;
    }
    return s;
}

static void q_q6_k(const float *x, struct kn_block_q6_k *b) {
    float s[16], amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        s[j] = kq_fit_sym6(x + 16 * j);
        amax = fmaxf(amax, fabsf(s[j]));
    }
    float d = kq_fp16_round(amax / 127.0f);
    float id = d > 0.0f ? 1.0f / d : 0.0f;
    b->d = kn_float_to_half(d);
    uint8_t q[KN_QK_K];
    for (int j = 0; j < 16; j++) {
        int sc = kq_qclamp(s[j] * id, -127, 127);
        b->scales[j] = (int8_t)sc;
        float es = d * (float)sc;
        float ies = es != 0.0f ? 1.0f / es : 0.0f;
        for (int i = 0; i < 16; i++) q[16 * j + i] = (uint8_t)(kq_qclamp(x[16 * j + i] * ies, -32, 31) + 32);
    }
    memset(b->qh, 0, sizeof b->qh);
    for (int h = 0; h < 2; h++) {
        uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const uint8_t *qq = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
            ql[l + 32] = (uint8_t)((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
            qh[l] = (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                              ((qq[l + 96] >> 4) << 6));
        }
    }
}

int kn_quantize_row(int type, const float *src, void *dst, int64_t n) {
    int bs = kn_type_block_size(type);
    if (!bs || n < 0 || n % bs) return -1;
    int64_t nb = n / bs;
    switch (type) {
    case KN_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
    case KN_F16: {
        uint8_t *p = dst;
        for (int64_t i = 0; i < n; i++) {
            kn_half h = kn_float_to_half(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return 0;
    }
    case KN_BF16: {
        uint8_t *p = dst;
        for (int64_t i = 0; i < n; i++) {
            kn_bf16 h = kn_float_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        return 0;
    }
    case KN_Q4_0: for (int64_t i = 0; i < nb; i++) q_q4_0(src + i * bs, (struct kn_block_q4_0 *)dst + i); return 0;
    case KN_Q4_1: for (int64_t i = 0; i < nb; i++) q_q4_1(src + i * bs, (struct kn_block_q4_1 *)dst + i); return 0;
    case KN_Q5_0: for (int64_t i = 0; i < nb; i++) q_q5_0(src + i * bs, (struct kn_block_q5_0 *)dst + i); return 0;
    case KN_Q5_1: for (int64_t i = 0; i < nb; i++) q_q5_1(src + i * bs, (struct kn_block_q5_1 *)dst + i); return 0;
    case KN_Q8_0: for (int64_t i = 0; i < nb; i++) q_q8_0(src + i * bs, (struct kn_block_q8_0 *)dst + i); return 0;
    case KN_Q4_K: for (int64_t i = 0; i < nb; i++) q_q4_k(src + i * bs, (struct kn_block_q4_k *)dst + i); return 0;
    case KN_Q5_K: for (int64_t i = 0; i < nb; i++) q_q5_k(src + i * bs, (struct kn_block_q5_k *)dst + i); return 0;
    case KN_Q6_K: for (int64_t i = 0; i < nb; i++) q_q6_k(src + i * bs, (struct kn_block_q6_k *)dst + i); return 0;
    default: return -1;
    }
}
