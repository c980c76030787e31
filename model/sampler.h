// model/sampler.h — next-token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty.
#pragma once
#include <stdint.h>

struct sampler_params {
    float temp;           // 0 = greedy
    int top_k;            // 0 = off
    float top_p;          // 1 = off
    float min_p;          // 0 = off
    float repeat_penalty; // 1 = off
    int repeat_last_n;    // tokens considered by the penalty
    uint64_t seed;
};

struct sampler;

struct sampler *sampler_init(const struct sampler_params *p, int n_vocab);
void sampler_free(struct sampler *s);
void sampler_set_params(struct sampler *s, const struct sampler_params *p); // reseeds when the seed changes
// Picks a token from logits (n_vocab; modified in place by the penalty). `recent` = the last n tokens
// of the context, for the repetition penalty.
int sampler_sample(struct sampler *s, float *logits, const int32_t *recent, int n_recent);
