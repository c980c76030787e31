// tokenizer/tok_text.h — internal glue between tok_spm.cc and the pure-C helpers of tok_text.c.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tok;

// Whether decoding drops the U+2581 that starts the first piece (after BOS or at the start), as
// SentencePiece does when the model adds a dummy prefix or removes extra whitespace. In tok_spm.cc.
int tok_drops_lead_space(const struct tok *t);

// Byte value of a byte-fallback piece spelled exactly "<0xAB>" (two hex digits), or -1.
int tok_text_byte_piece(const char *s, size_t n);

// Whether the UTF-8 text s[0..n) is non-empty and all punctuation once U+2581 and whitespace are
// removed (the rule is documented at tok_is_punct in tok_text.c). Invalid UTF-8 is not punctuation.
int tok_text_is_punct(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
