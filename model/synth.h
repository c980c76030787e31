// model/synth.h — random-weight GGUF models shaped like real llama / gemma3 checkpoints (fixtures, benchmarks).
#pragma once
#include <stddef.h>
#include <stdint.h>

// What to generate. Start from synth_preset() and adjust; every field is written to the file's metadata.
struct synth_spec {
    char arch[16];          // "llama" or "gemma3"
    char name[64];          // general.name ("" = "synthetic <arch>")
    int n_embd, n_layer, n_head, n_head_kv;
    int head_dim;           // 0 = n_embd / n_head
    int n_ff, n_vocab, n_ctx;
    float rope_freq_base;   // <arch>.rope.freq_base (gemma3: the global layers)
    float rope_freq_base_swa; // gemma3 sliding-window layers; written as <arch>.rope.freq_base_swa only when
                              // > 0 (real gemma3 GGUFs omit it; llama.cpp then uses 10000)
    float rms_eps;
    int sliding_window;     // gemma3: <arch>.attention.sliding_window
    int wtype;              // enum kn_type of every matrix when q4_k_m == 0
    int q4_k_m;             // 1: llama.cpp's Q4_K_M mixture (wtype ignored), see synth_tensor_type
    int add_space_prefix;   // tokenizer.ggml.add_space_prefix (llama 1, gemma3 0)
    uint64_t seed;          // same spec + seed = byte-identical file
    float w_std;            // standard deviation of matrix weights (0 = 0.02)
};

// Fills s with a named shape: "tinyllama" (TinyLlama-1.1B), "llama7b" (Llama-2-7B), "gemma3-270m",
// "tiny" (a 2-layer llama, dim 256, vocab 1024) or "tiny-gemma3" (6 layers, dim 256, vocab 1024).
// Weight type Q8_0, q4_k_m 0, seed 1. 0 ok, -1 unknown name.
int synth_preset(struct synth_spec *s, const char *preset);

// The GGML type the generator stores for a tensor: 1-D tensors F32; with q4_k_m, llama.cpp's choice
// (output, or token_embd when the output is tied: Q6_K; attn_v and ffn_down: Q6_K on the first and last
// eighth of layers and every third layer between, else Q4_K; all else Q4_K); otherwise s->wtype. A k-quant
// whose block does not divide ne0 falls back as llama.cpp does (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0), any
// other misfit to F16. `name` is the GGUF tensor name ("blk.3.ffn_down.weight").
int synth_tensor_type(const struct synth_spec *s, const char *name, int n_dims, int64_t ne0);

// Writes the model: llama.cpp tensor names and shapes for the arch, the hyper-parameter metadata and a
// synthetic SentencePiece-style vocabulary (<unk>, <s>, </s>, 256 byte pieces <0x00>..<0xFF>, then unique
// pieces such as "▁the"; unk 0, bos 1, eos 2). Weights come from a PRNG keyed by (seed, tensor, row) and
// are generated row by row while the file is written, so memory stays small for multi-GB models.
// 0 ok, -1 with a one-line err.
int synth_write_gguf(const struct synth_spec *s, const char *path, char *err, size_t errlen);

