// model/llama2c.h — llama2.c checkpoints (legacy v0 and version 1, fp32) mapped read-only.
#pragma once
#include <stddef.h>
#include <stdint.h>

struct llama2c_file {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
    void *map;
    size_t size;
    // fp32 arrays inside the mapping
    const float *tok_embd;  // (vocab, dim)
    const float *rms_att;   // (layers, dim)
    const float *wq;        // (layers, dim, dim)
    const float *wk;        // (layers, kv_dim, dim)
    const float *wv;        // (layers, kv_dim, dim)
    const float *wo;        // (layers, dim, dim)
    const float *rms_ffn;   // (layers, dim)
    const float *w1;        // (layers, hidden, dim)
    const float *w2;        // (layers, dim, hidden)
    const float *w3;        // (layers, hidden, dim)
    const float *rms_final; // (dim)
    const float *wcls;      // (vocab, dim)
};

// Whether the first bytes look like a llama2.c checkpoint (v1 magic or a plausible v0 header).
int llama2c_sniff(const unsigned char *head, size_t n);
// Maps and validates the file (sizes against the header). 0 ok, -1 with a one-line err.
int llama2c_open(const char *path, struct llama2c_file *f, char *err, size_t errlen);
void llama2c_close(struct llama2c_file *f);
