// tokenizer/tok.h — our C API over libsentencepiece: load from a .model file or from a GGUF vocabulary,
// encode, decode pieces safely (byte fallback, invalid UTF-8), token types.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct gguf;
struct tok;

enum tok_type { // SentencePiece piece types (same numbering as GGUF tokenizer.ggml.token_type)
    TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5, TOK_BYTE = 6,
};

// Loads a SentencePiece .model file. NULL on failure with a one-line reason in err.
struct tok *tok_load_model(const char *path, char *err, size_t errlen);
// Builds a SentencePiece model from a GGUF vocabulary (tokenizer.ggml.tokens/scores/token_type,
// bos/eos/unk/pad ids, add_space_prefix; tokenizer.ggml.model must be "llama"). NULL + err on failure.
struct tok *tok_load_gguf(const struct gguf *g, char *err, size_t errlen);
void tok_free(struct tok *t);

int tok_n_vocab(const struct tok *t);
int tok_bos(const struct tok *t); // -1 when absent
int tok_eos(const struct tok *t);
int tok_unk(const struct tok *t);
int tok_type(const struct tok *t, int id);          // enum tok_type
const char *tok_piece(const struct tok *t, int id); // raw piece text (with U+2581), NUL-terminated
float tok_score(const struct tok *t, int id);
int tok_piece_to_id(const struct tok *t, const char *piece); // -1 when absent (control pieces too)

// Encodes UTF-8 text (no BOS/EOS added). Writes up to cap ids; returns the number of ids the text needs
// (may exceed cap: call again with a bigger buffer), or -1 on error. Text that names a control piece
// exactly (e.g. "<start_of_turn>", "<s>") is NOT split out: use tok_encode_special. User-defined pieces
// (Gemma's "\n", whitespace runs, HTML tags) are always matched, as SentencePiece itself does.
int tok_encode(const struct tok *t, const char *text, int32_t *ids, int cap);
// Like tok_encode, but spans that spell a control/unknown piece become that single id (longest match).
// The text between them is encoded segment by segment exactly as tok_encode would, so with a dummy-prefix
// model each segment gets its prefix ("<s>[INST]" -> <s> "▁[INST]", as Meta's Llama 2 chat code and
// llama.cpp produce); Gemma adds none.
int tok_encode_special(const struct tok *t, const char *text, int32_t *ids, int cap);

// Text for one token in streaming output. `prev` is the previous token id (or -1): a leading space
// is dropped after BOS as SentencePiece does. Byte-fallback pieces (<0x41>) become raw bytes; control
// tokens become "". Writes at most cap-1 bytes plus NUL; returns the byte count.
int tok_decode_piece(const struct tok *t, int prev, int id, char *out, size_t cap);

// Whether the piece is all punctuation once U+2581 and whitespace are stripped (and non-empty).
int tok_is_punct(const struct tok *t, int id);

// Accumulates streamed bytes and releases only complete UTF-8 sequences; invalid bytes become U+FFFD.
struct tok_utf8 {
    unsigned char pend[8];
    int n_pend;
};
// Appends the valid UTF-8 from in[0..n) (plus pending bytes) to out (cap incl. NUL); returns bytes written.
// Zero-initialise the struct. Output that does not fit stops at a character boundary and the rest of the
// input is dropped; cap >= 3 * (n + 3) + 1 never truncates.
int tok_utf8_push(struct tok_utf8 *u, const char *in, size_t n, char *out, size_t cap);
// Flushes pending bytes (as U+FFFD when incomplete).
int tok_utf8_flush(struct tok_utf8 *u, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
