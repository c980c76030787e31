// kvcache/kv_quant_math.h — KIVI arithmetic shared by the CPU and CUDA kernels (host+device): scale/zero of a
// group, code encode/decode, and accessors for the fp block and packed group layouts of kv_layout.h.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kvcache/kv_layout.h"

KN_HD uint32_t kvq_levels(int B) { return (1u << B) - 1u; }

// A group's scale and zero as stored (fp16 bits) and as used (their exact fp32 values).
struct kvq_param {
    kn_half hs, hz;
    float s, z;
};

// KIVI asymmetric parameters of a group with minimum mn and maximum mx: z = mn, s = (mx - mn)/(2^B - 1),
// both rounded to fp16; s = 0 when mx == mn (every code is then 0).
KN_HD struct kvq_param kvq_param_make(float mn, float mx, int B) {
    struct kvq_param p;
    p.hz = kn_float_to_half(mn);
    p.hs = mx > mn ? kn_float_to_half((mx - mn) / (float)kvq_levels(B)) : (kn_half)0;
    p.z = kn_half_to_float(p.hz);
    p.s = kn_half_to_float(p.hs);
    return p;
}

// code = clamp(round((x - z) / s), 0, 2^B - 1), ties away from zero, computed with the fp16-rounded s and z
// (the values dequantisation will use); 0 when s == 0.
KN_HD uint32_t kvq_encode(float x, float s, float z, int B) {
    if (!(s > 0.0f)) return 0;
    float v = floorf((x - z) / s + 0.5f);
    if (!(v > 0.0f)) return 0; // negative or NaN
    float top = (float)kvq_levels(B);
    return v >= top ? kvq_levels(B) : (uint32_t)v;
}

// Dequantised value: one fused multiply-add, so host and device agree bit for bit.
KN_HD float kvq_decode(uint32_t code, float s, float z) { return fmaf((float)code, s, z); }

// ---- fp block accessors (block: KV_FP_BLOCK slots of one layer and KV head) ----
KN_HD int32_t *kvq_fp_pos(void *blk) { return (int32_t *)((unsigned char *)blk + kv_fp_off_pos()); }
KN_HD kn_half *kvq_fp_k(void *blk, int D, int slot) {
    return (kn_half *)((unsigned char *)blk + kv_fp_off_k(D)) + (size_t)slot * D;
}
KN_HD kn_half *kvq_fp_v(void *blk, int D, int slot) {
    return (kn_half *)((unsigned char *)blk + kv_fp_off_v(D)) + (size_t)slot * D;
}

// ---- packed group accessors ----
KN_HD int32_t *kvq_pos_base(void *g) { return (int32_t *)g; }
KN_HD uint32_t *kvq_live(void *g) { return (uint32_t *)((unsigned char *)g + 4); }
KN_HD uint16_t *kvq_pos_off(void *g, struct kv_qfmt f) {
    return (uint16_t *)((unsigned char *)g + kv_q_off_posoff(f));
}
KN_HD uint32_t *kvq_kcode(void *g, struct kv_qfmt f) { return (uint32_t *)((unsigned char *)g + kv_q_off_kcode(f)); }
KN_HD kn_half *kvq_kscale(void *g, struct kv_qfmt f) { return (kn_half *)((unsigned char *)g + kv_q_off_kscale(f)); }
KN_HD kn_half *kvq_kzero(void *g, struct kv_qfmt f) { return (kn_half *)((unsigned char *)g + kv_q_off_kzero(f)); }
KN_HD uint32_t *kvq_vcode(void *g, struct kv_qfmt f) { return (uint32_t *)((unsigned char *)g + kv_q_off_vcode(f)); }
KN_HD kn_half *kvq_vscale(void *g, struct kv_qfmt f) { return (kn_half *)((unsigned char *)g + kv_q_off_vscale(f)); }
KN_HD kn_half *kvq_vzero(void *g, struct kv_qfmt f) { return (kn_half *)((unsigned char *)g + kv_q_off_vzero(f)); }

// Records position pos for group slot t and marks it live: the first live token sets pos_base, later ones
// store pos - pos_base (the caller guarantees it fits in uint16).
KN_HD void kvq_set_pos(void *g, struct kv_qfmt f, int t, int32_t pos) {
    uint32_t *live = kvq_live(g);
    uint16_t *off = kvq_pos_off(g, f);
    if (*live == 0) {
        *kvq_pos_base(g) = pos;
        off[t] = 0;
    } else {
        off[t] = (uint16_t)(pos - *kvq_pos_base(g));
    }
    *live |= 1u << t;
}

// Whether the packed format is one the kernels handle: B in {1,2,4,8}, 1 <= G <= 32, VG divides D.
KN_HD int kvq_fmt_ok(struct kv_qfmt f) {
    return (f.B == 1 || f.B == 2 || f.B == 4 || f.B == 8) && f.G >= 1 && f.G <= KV_MAX_GROUP && f.D >= 1 &&
           f.VG >= 1 && f.D % f.VG == 0;
}
