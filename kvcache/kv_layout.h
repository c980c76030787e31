// kvcache/kv_layout.h — byte layout of KV cache blocks and the plain-data view kernels read.
// One definition serves the C (CPU) and CUDA code: offsets, packing and dequantisation helpers.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn_types.h"

#define KV_FP_BLOCK 32 // tokens per full-precision block
#define KV_MAX_GROUP 32 // packed groups hold at most 32 tokens (one uint32 live mask)

// ---- Full-precision block (one layer, one KV head, 32 token slots) -----------------------------
//   int32  pos[32]                 token position; slot order is arbitrary
//   fp16   k[32][D]                keys after RoPE
//   fp16   v[32][D]
KN_HD size_t kv_fp_off_pos(void) { return 0; }
KN_HD size_t kv_fp_off_k(int D) { (void)D; return KV_FP_BLOCK * 4; }
KN_HD size_t kv_fp_off_v(int D) { return KV_FP_BLOCK * 4 + (size_t)KV_FP_BLOCK * D * 2; }
KN_HD size_t kv_fp_block_bytes(int D) { return KV_FP_BLOCK * 4 + (size_t)2 * KV_FP_BLOCK * D * 2; }

// ---- Packed (KIVI) group: G tokens of one layer and KV head, B bits per code -------------------
// Keys are quantised per channel over the G tokens, values per token over VG = min(G, D) channels.
// Codes form flat little-endian bit streams, 32/B codes per uint32, lowest bits first:
//   key code (d, t) has index d*G + t    (channel-major: a channel's G tokens are contiguous)
//   value code (t, d) has index t*D + d  (token-major)
// Layout (each section starts 4-byte aligned):
//   int32  pos_base;  uint32 live      bit t set = slot t holds a live token
//   uint16 pos_off[G]                  position = pos_base + pos_off[t]
//   uint32 kcode[ceil(D*G*B/32)]
//   fp16   kscale[D], kzero[D]
//   uint32 vcode[ceil(G*D*B/32)]
//   fp16   vscale[G*D/VG], vzero[G*D/VG]   index t*(D/VG) + d/VG
// Dequantised value = code * scale + zero (scale, zero fp16). Zero = group min, scale = range/(2^B-1).
struct kv_qfmt {
    int D, G, B, VG;
};
KN_HD struct kv_qfmt kv_qfmt_make(int D, int G, int B) {
    struct kv_qfmt f;
    f.D = D;
    f.G = G;
    f.B = B;
    f.VG = G < D ? G : D;
    return f;
}
KN_HD size_t kv_align4(size_t n) { return (n + 3) & ~(size_t)3; }
KN_HD size_t kv_q_words(size_t n_codes, int B) { return (n_codes * (size_t)B + 31) / 32; }
KN_HD size_t kv_q_off_posoff(struct kv_qfmt f) { (void)f; return 8; }
KN_HD size_t kv_q_off_kcode(struct kv_qfmt f) { return kv_align4(8 + (size_t)f.G * 2); }
KN_HD size_t kv_q_off_kscale(struct kv_qfmt f) {
    return kv_q_off_kcode(f) + 4 * kv_q_words((size_t)f.D * f.G, f.B);
}
KN_HD size_t kv_q_off_kzero(struct kv_qfmt f) { return kv_q_off_kscale(f) + (size_t)f.D * 2; }
KN_HD size_t kv_q_off_vcode(struct kv_qfmt f) { return kv_align4(kv_q_off_kzero(f) + (size_t)f.D * 2); }
KN_HD size_t kv_q_n_vgroups(struct kv_qfmt f) { return (size_t)f.G * (f.D / f.VG); }
KN_HD size_t kv_q_off_vscale(struct kv_qfmt f) {
    return kv_q_off_vcode(f) + 4 * kv_q_words((size_t)f.G * f.D, f.B);
}
KN_HD size_t kv_q_off_vzero(struct kv_qfmt f) { return kv_q_off_vscale(f) + kv_q_n_vgroups(f) * 2; }
KN_HD size_t kv_q_block_bytes(struct kv_qfmt f) {
    size_t end = kv_q_off_vzero(f) + kv_q_n_vgroups(f) * 2;
    return (end + 15) & ~(size_t)15;
}
// Code i of a packed stream.
KN_HD uint32_t kv_code_get(const uint32_t *w, size_t i, int B) {
    size_t per = 32 / B;
    return (w[i / per] >> ((i % per) * B)) & ((1u << B) - 1);
}
KN_HD void kv_code_set(uint32_t *w, size_t i, int B, uint32_t code) {
    size_t per = 32 / B;
    uint32_t sh = (uint32_t)((i % per) * B);
    uint32_t mask = ((1u << B) - 1) << sh;
    w[i / per] = (w[i / per] & ~mask) | ((code << sh) & mask);
}

// ---- The view kernels read (host structs; block pointers are backend memory) -------------------
struct kv_head_view {
    int32_t n_fp;            // slots in use in the fp region: slot s is block s/32, index s%32
    int32_t n_q;             // packed groups
    void *const *fp_blocks;  // (ceil(n_fp/32)) fp block pointers
    void *const *q_blocks;   // (n_q) packed group pointers
};
struct kv_layer_view {
    int n_head_kv, head_dim;
    int bits, group;         // packed format; bits == 0 when there is no packed region
    int window;              // sliding window: slot visible to a query at position p iff
                             // pos <= p and (window == 0 or pos > p - window)
    int max_slots;           // max over heads of n_q*group + n_fp (row stride of attention probs)
    const struct kv_head_view *heads; // (n_head_kv)
};
// Attention probabilities, when requested, index a head's slots as: packed group g slot t -> g*group + t,
// fp slot s -> n_q*group + s. Invisible or dead slots have probability 0.
