// tokenizer/tok_vocab.h — a tokenizer from plain vocabulary arrays (what a GGUF holds).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok.h"

#ifdef __cplusplus
extern "C" {
#endif

// A SentencePiece BPE vocabulary as arrays. Everything is copied by tok_load_vocab; nothing is kept.
struct tok_vocab {
    int n_vocab;
    const char *const *pieces; // (n_vocab) UTF-8 piece text, as GGUF stores it
    const size_t *piece_lens;  // (n_vocab) byte lengths, or NULL when every piece is NUL-terminated
    const float *scores;       // (n_vocab) merge scores, or NULL for all 0
    const int32_t *types; // (n_vocab) enum tok_type, or NULL for all TOK_NORMAL; 0 or >6 read as TOK_NORMAL
    int bos_id, eos_id, unk_id, pad_id; // -1 when absent; unk_id -1 means "the piece typed TOK_UNKNOWN"
    int add_space_prefix;         // SentencePiece add_dummy_prefix (GGUF tokenizer.ggml.add_space_prefix)
    int remove_extra_whitespaces; // SentencePiece normalizer option; GGUF has no key for it, so 0 there
};

// Serializes the vocabulary into a SentencePiece ModelProto (BPE, identity normalizer, whitespace escaped,
// byte_fallback when byte pieces exist, split_digits and whitespace-only pieces allowed as in the Llama 2
// and Gemma 3 tokenizer.model files) and loads it with libsentencepiece. Fix-ups, each undoing something
// GGUF converters do: a space inside a user-defined piece becomes U+2581 again (llama.cpp's converter
// "pre-normalizes" them, e.g. Gemma's whitespace-run pieces); the unk_id piece is typed TOK_UNKNOWN
// (SentencePiece needs exactly one); empty or duplicate pieces are given a private unused name inside the
// proto (tok_piece still returns the original text). NULL + one-line err on failure.
struct tok *tok_load_vocab(const struct tok_vocab *v, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
