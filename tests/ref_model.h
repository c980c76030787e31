// tests/ref_model.h — a deliberately naive double-precision reference forward pass (llama, gemma3) over a
// GGUF.
//
// Written apart from model/model.c (it shares none of its code) so the two can be checked against each other.
// Weights are dequantised once with kn_dequant_row and held as doubles; every token is run alone through
// plain loops in double precision. Numerics contract shared with kvchat (not code): keys (after RoPE) and
// values are rounded to IEEE fp16 (round to nearest even) when stored, because the KV cache stores them that
// way; all other arithmetic is exact up to double rounding.
//
// Rounding ties: kvchat computes K and V in fp32, so a value that lies within fp32 noise of an fp16 rounding
// midpoint may round to either neighbour, and one such flip moves logits by ~1e-4 (relative) downstream. With
// a tie oracle set, the reference asks it, for exactly those values (|x - midpoint| <= REF_TIE_EPS * (|x| +
// rms of the head's vector)), which value kvchat stored, and takes it when it is one of the two neighbours;
// every other value is rounded by the reference itself.
#pragma once
#include <stddef.h>

struct ref_model;

// Loads the GGUF at path (architectures "llama" and "gemma3") for contexts of up to n_ctx tokens.
// NULL with a one-line reason in err on failure.
struct ref_model *ref_model_load(const char *path, int n_ctx, char *err, size_t errlen);
void ref_model_free(struct ref_model *r);
int ref_model_n_vocab(const struct ref_model *r);
int ref_model_n_past(const struct ref_model *r);
// Forgets every token.
void ref_model_reset(struct ref_model *r);
#define REF_TIE_EPS 1e-5

// Returns 0 and the fp16 value (as float) kvchat stored for element d of the key (is_v 0) or value (1) of
// KV head h at position pos in layer; -1 when unknown.
typedef int (*ref_tie_fn)(void *ud, int layer, int pos, int h, int is_v, int d, float *stored);
void ref_model_set_tie_oracle(struct ref_model *r, ref_tie_fn fn, void *ud);
// Ties met since the last reset, and how many of them took the other neighbour than round-to-nearest.
void ref_model_tie_counts(const struct ref_model *r, int *n_ties, int *n_other);
// The stored (fp16-rounded) key or value of KV head h at position pos (< n_past) in layer: (head_dim) values.
const double *ref_model_kv(const struct ref_model *r, int layer, int pos, int h, int is_v);
int ref_model_head_dim(const struct ref_model *r);

// Runs `token` at the next position (ref_model_n_past) and writes the (n_vocab) logits. 0 ok, -1 when the
// context is full or the token is out of range.
int ref_model_step(struct ref_model *r, int token, double *logits);
