// model/sampler.c — sampling without sorting the whole vocabulary: the candidates are cut by top-k
// (quickselect) or by a probability floor before anything is sorted.
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cand {
    float logit;
    int id;
};

struct sampler {
    struct sampler_params p;
    int n_vocab;
    uint64_t rng;
    struct cand *c; // (n_vocab)
};

static uint64_t rng_next(uint64_t *s) { // xorshift64*
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static float rng_f32(uint64_t *s) { return (float)(rng_next(s) >> 40) / (float)(1u << 24); }

struct sampler *sampler_init(const struct sampler_params *p, int n_vocab) {
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    if (!s->c) {
        free(s);
        return NULL;
    }
    s->n_vocab = n_vocab;
    s->p = *p;
    s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ull;
    return s;
}

void sampler_free(struct sampler *s) {
    if (!s) return;
    free(s->c);
    free(s);
}

void sampler_set_params(struct sampler *s, const struct sampler_params *p) {
    if (p->seed != s->p.seed) s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ull;
    s->p = *p;
}

static int cmp_desc(const void *a, const void *b) {
    float x = ((const struct cand *)a)->logit, y = ((const struct cand *)b)->logit;
    return (x < y) - (x > y);
}

// Moves the k largest to c[0..k) (unordered) by quickselect.
static void select_top(struct cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pv = c[lo + (hi - lo) / 2].logit;
        int i = lo, j = hi;
        while (i <= j) {
            while (c[i].logit > pv) i++;
            while (c[j].logit < pv) j--;
            if (i <= j) {
                struct cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

int sampler_sample(struct sampler *s, float *logits, const int32_t *recent, int n_recent) {
    const struct sampler_params *p = &s->p;
    int n = s->n_vocab;
    if (p->repeat_penalty != 1.0f && recent) {
        int from = n_recent > p->repeat_last_n ? n_recent - p->repeat_last_n : 0;
        for (int i = from; i < n_recent; i++) {
            int id = recent[i];
            if (id < 0 || id >= n) continue;
            // each id penalised once even when repeated in the window
            int seen = 0;
            for (int j = from; j < i; j++) seen |= recent[j] == id;
            if (seen) continue;
            logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty : logits[id] * p->repeat_penalty;
        }
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (p->temp <= 0.0f) return best;
    float maxl = logits[best];
    struct cand *c = s->c;
    int m = 0;
    // drop candidates that min-p (or, without it, a 1e-9 floor) would remove anyway before sorting
    float floor_p = p->min_p > 0.0f ? p->min_p : 1e-9f;
    float cut = maxl + p->temp * logf(floor_p); // p_i/p_max = exp((l_i - maxl)/temp) >= floor_p
    for (int i = 0; i < n; i++)
        if (logits[i] >= cut) {
            c[m].logit = logits[i];
            c[m].id = i;
            m++;
        }
    if (p->top_k > 0 && p->top_k < m) {
        select_top(c, m, p->top_k);
        m = p->top_k;
    }
    qsort(c, (size_t)m, sizeof *c, cmp_desc);
    double sum = 0.0;
    for (int i = 0; i < m; i++) {
        c[i].logit = expf((c[i].logit - maxl) / p->temp);
        sum += c[i].logit;
    }
    if (p->top_p < 1.0f) {
        double acc = 0.0;
        int keep = m;
        for (int i = 0; i < m; i++) {
            acc += c[i].logit / sum;
            if (acc >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
        sum = 0.0;
        for (int i = 0; i < m; i++) sum += c[i].logit;
    }
    double r = rng_f32(&s->rng) * sum, acc = 0.0;
    for (int i = 0; i < m; i++) {
        acc += c[i].logit;
        if (r < acc) return c[i].id;
    }
    return c[m - 1].id;
}
