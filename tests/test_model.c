// tests/test_model.c — the forward pass against a naive reference (tests/ref_model.c) on random-weight llama
// and gemma3 GGUFs, stories260K (llama2.c and as GGUF), and bad model files.
#include "model/model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kn_cpu_impl.h"
#include "kernels/kn_quant.h"
#include "kvcache/kv_cache.h"
#include "model/gguf.h"
#include "tests/ref_model.h"
#include "tests/test.h"
#include "tokenizer/tok.h"

#define TOL 1e-4 // max |kvchat - ref| / max |ref| over a position's logits

static char tmpdir[256];

struct paths {
    char p[64][320];
    int n;
};
static struct paths made; // files to remove at the end (test-local bookkeeping)

// Path of `name` in the test's directory, remembered for the clean-up.
static const char *tmp_file(const char *name) {
    char p[320];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    for (int i = 0; i < made.n; i++)
        if (strcmp(made.p[i], p) == 0) return made.p[i];
    if (made.n >= 64) abort();
    memcpy(made.p[made.n], p, sizeof p);
    return made.p[made.n++];
}

// ---- PRNG ------------------------------------------------------------------------------------------

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }
static double rng_gauss(uint64_t *s) {
    double u = rng_unif(s), v = rng_unif(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

// ---- random-weight GGUF fixtures --------------------------------------------------------------------

struct fx {
    const char *arch; // "llama" or "gemma3"
    int D, L, H, Hkv, hd, F, V, window;
    const int *types; // matrix types, cycled over the matrices in file order
    int n_types;
    int tied;       // no output.weight
    float base;     // rope.freq_base
    float base_swa; // gemma3: rope.freq_base_swa written when > 0
    uint64_t seed;
    double qk_std; // std of attn_q/attn_k weights times sqrt(dim) (0 = 1); gemma3's QK-norm inputs
                   // then have rms ~qk_std, and the norm's epsilon matters when that is small
};

static void put_tensor(struct gguf_writer *w, const char *name, int type, int cols, int rows, double std,
                       double mean, uint64_t *rng) {
    float *v = malloc((size_t)cols * rows * sizeof *v);
    for (size_t i = 0; i < (size_t)cols * rows; i++)
        v[i] = (float)(mean + std * rng_gauss(rng));
    int64_t ne[2] = {cols, rows};
    int rc = gguf_w_tensor_f32(w, name, type, rows == 1 ? 1 : 2, ne, v);
    if (rc) fprintf(stderr, "fixture: cannot add %s\n", name);
    free(v);
}

// Pieces: <unk> <s> </s>, the 256 byte pieces, then "▁w<i>".
static void put_vocab(struct gguf_writer *w, int V) {
    char **pieces = malloc((size_t)V * sizeof *pieces);
    float *scores = malloc((size_t)V * sizeof *scores);
    int32_t *types = malloc((size_t)V * sizeof *types);
    for (int i = 0; i < V; i++) {
        pieces[i] = malloc(32);
        if (i == 0)
            snprintf(pieces[i], 32, "<unk>");
        else if (i == 1)
            snprintf(pieces[i], 32, "<s>");
        else if (i == 2)
            snprintf(pieces[i], 32, "</s>");
        else if (i < 259)
            snprintf(pieces[i], 32, "<0x%02X>", i - 3);
        else
            snprintf(pieces[i], 32, "\xe2\x96\x81w%d", i - 259);
        types[i] = i == 0 ? TOK_UNKNOWN : i < 3 ? TOK_CONTROL : i < 259 ? TOK_BYTE : TOK_NORMAL;
        scores[i] = i < 259 ? 0.0f : -(float)(i - 259);
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, (uint64_t)V);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)V);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)V);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    for (int i = 0; i < V; i++)
        free(pieces[i]);
    free(pieces);
    free(scores);
    free(types);
}

// What a fixture may get wrong on purpose (bad-file tests).
enum fx_break { FX_OK, FX_NO_TENSOR, FX_BAD_SHAPE, FX_BAD_ARCH, FX_ZERO_LAYERS, FX_BAD_HEADS };

static int fx_write(const struct fx *f, const char *path, int brk) {
    struct gguf_writer *w = gguf_writer_init();
    uint64_t rng = f->seed;
    int gemma = strcmp(f->arch, "gemma3") == 0;
    char key[128];
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", f->arch, k), key)
    gguf_w_str(w, "general.architecture", brk == FX_BAD_ARCH ? "mamba" : f->arch);
    gguf_w_str(w, "general.name", "test fixture");
    gguf_w_u32(w, KEY("context_length"), 4096);
    gguf_w_u32(w, KEY("embedding_length"), (uint32_t)f->D);
    gguf_w_u32(w, KEY("block_count"), brk == FX_ZERO_LAYERS ? 0 : (uint32_t)f->L);
    gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)f->F);
    gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)f->H);
    gguf_w_u32(w, KEY("attention.head_count_kv"),
               brk == FX_BAD_HEADS ? (uint32_t)f->H - 1 : (uint32_t)f->Hkv);
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), gemma ? 1e-6f : 1e-5f);
    gguf_w_f32(w, KEY("rope.freq_base"), f->base);
    if (gemma) {
        gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)f->hd);
        gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)f->hd);
        gguf_w_u32(w, KEY("attention.sliding_window"), (uint32_t)f->window);
        if (f->base_swa > 0) gguf_w_f32(w, KEY("rope.freq_base_swa"), f->base_swa);
    } else {
        gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)f->hd);
    }
#undef KEY
    put_vocab(w, f->V);
    int D = f->D, QD = f->H * f->hd, KD = f->Hkv * f->hd, ti = 0;
#define TYPE() (f->types[ti++ % f->n_types])
    double emb_std = gemma ? 1.0 / sqrt((double)D) : 1.0, qk = f->qk_std > 0 ? f->qk_std : 1.0;
    put_tensor(w, "token_embd.weight", TYPE(), D, f->V, emb_std, 0.0, &rng);
    put_tensor(w, "output_norm.weight", KN_F32, D, 1, 0.1, 1.0, &rng);
    if (!f->tied) put_tensor(w, "output.weight", TYPE(), D, f->V, 1.0 / sqrt((double)D), 0.0, &rng);
    for (int l = 0; l < f->L; l++) {
        char nm[96];
#define T(suffix, type, cols, rows, std, mean)                                                               \
    do {                                                                                                     \
        snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, suffix);                                              \
        put_tensor(w, nm, type, cols, rows, std, mean, &rng);                                                \
    } while (0)
        T("attn_norm", KN_F32, D, 1, 0.1, 1.0);
        T("attn_q", TYPE(), D, QD, qk / sqrt((double)D), 0.0);
        if (!(brk == FX_NO_TENSOR && l == f->L - 1)) T("attn_k", TYPE(), D, KD, qk / sqrt((double)D), 0.0);
        T("attn_v", TYPE(), D, brk == FX_BAD_SHAPE && l == 0 ? KD + 32 : KD, 1.0 / sqrt((double)D), 0.0);
        T("attn_output", TYPE(), QD, D, 1.0 / sqrt((double)QD), 0.0);
        T("ffn_norm", KN_F32, D, 1, 0.1, 1.0);
        T("ffn_gate", TYPE(), D, f->F, 1.0 / sqrt((double)D), 0.0);
        T("ffn_up", TYPE(), D, f->F, 1.0 / sqrt((double)D), 0.0);
        T("ffn_down", TYPE(), f->F, D, 1.0 / sqrt((double)f->F), 0.0);
        if (gemma) {
            T("attn_q_norm", KN_F32, f->hd, 1, 0.1, 1.0);
            T("attn_k_norm", KN_F32, f->hd, 1, 0.1, 1.0);
            T("post_attention_norm", KN_F32, D, 1, 0.1, 1.0);
            T("post_ffw_norm", KN_F32, D, 1, 0.1, 1.0);
        }
#undef T
    }
#undef TYPE
    char err[256];
    int rc = gguf_writer_save(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "fixture %s: %s\n", path, err);
    gguf_writer_free(w);
    return rc;
}

// ---- a recording backend: the CPU backend, plus a copy of every K/V row kvchat stores ------------------
// The reference's tie oracle (ref_model.h) reads these. model.c stores each layer's K/V once per micro-batch,
// layers in order, so the n-th kv_store call since rec_reset belongs to layer n % n_layer.

struct rec {
    struct kn_backend base; // first: the model sees a plain backend
    struct kn_ops ops;
    struct kn_backend *in;
    int n_layer, n_ctx, n_kv, hd;
    long calls;
    float *k, *v; // (n_layer, n_ctx, n_kv, hd) what kvchat stored, as float
};

#define IN(be) (((struct rec *)(be))->in)
static void r_free(struct kn_backend *be) { (void)be; }
static void *r_alloc(struct kn_backend *be, size_t n, int tag) { return IN(be)->ops->alloc(IN(be), n, tag); }
static void r_dealloc(struct kn_backend *be, void *p) { IN(be)->ops->dealloc(IN(be), p); }
static int r_upload(struct kn_backend *be, void *d, const void *s, size_t n) {
    return IN(be)->ops->upload(IN(be), d, s, n);
}
static int r_download(struct kn_backend *be, void *d, const void *s, size_t n) {
    return IN(be)->ops->download(IN(be), d, s, n);
}
static int r_memset0(struct kn_backend *be, void *d, size_t n) { return IN(be)->ops->memset0(IN(be), d, n); }
static int r_tload(struct kn_backend *be, struct kn_tensor *t, const void *h) {
    return IN(be)->ops->tensor_load(IN(be), t, h);
}
static void r_tunload(struct kn_backend *be, struct kn_tensor *t) { IN(be)->ops->tensor_unload(IN(be), t); }
static void r_mem(struct kn_backend *be, struct kn_mem *m) { IN(be)->ops->mem_info(IN(be), m); }
static int r_sync(struct kn_backend *be) { return IN(be)->ops->sync(IN(be)); }
static void r_matmul(struct kn_backend *be, float *y, const struct kn_tensor *w, const float *x, int n) {
    IN(be)->ops->matmul(IN(be), y, w, x, n);
}
static void r_rows(struct kn_backend *be, float *y, const struct kn_tensor *w, const int32_t *ids, int n) {
    IN(be)->ops->get_rows(IN(be), y, w, ids, n);
}
static void r_rms(struct kn_backend *be, float *y, const float *x, const struct kn_tensor *w, int n, int d,
                  float e) {
    IN(be)->ops->rmsnorm(IN(be), y, x, w, n, d, e);
}
static void r_rope(struct kn_backend *be, float *x, const int32_t *pos, int n, int nh, int hd, int nr,
                   float b, float fs, int mode) {
    IN(be)->ops->rope(IN(be), x, pos, n, nh, hd, nr, b, fs, mode);
}
static void r_add(struct kn_backend *be, float *y, const float *x, size_t n) {
    IN(be)->ops->add(IN(be), y, x, n);
}
static void r_scale(struct kn_backend *be, float *y, float s, size_t n) {
    IN(be)->ops->scale(IN(be), y, s, n);
}
static void r_glu(struct kn_backend *be, float *y, const float *g, const float *u, size_t n, int act) {
    IN(be)->ops->glu(IN(be), y, g, u, n, act);
}
static void r_attn(struct kn_backend *be, const struct kn_attn_args *a) { IN(be)->ops->attention(IN(be), a); }
static void r_kv_store(struct kn_backend *be, const struct kv_slot *dst, const float *k, const float *v,
                       const int32_t *pos, int n_tok, int n_head_kv, int D) {
    struct rec *r = (struct rec *)be;
    IN(be)->ops->kv_store(IN(be), dst, k, v, pos, n_tok, n_head_kv, D);
    int layer = (int)(r->calls++ % r->n_layer);
    if (!r->k || n_head_kv != r->n_kv || D != r->hd) return;
    for (int t = 0; t < n_tok; t++) {
        if (pos[t] < 0 || pos[t] >= r->n_ctx) continue;
        for (int h = 0; h < n_head_kv; h++) {
            const struct kv_slot *s = &dst[(size_t)t * n_head_kv + h];
            const kn_half *ks =
                (const kn_half *)((const char *)s->block + kv_fp_off_k(D)) + (size_t)s->slot * D;
            const kn_half *vs =
                (const kn_half *)((const char *)s->block + kv_fp_off_v(D)) + (size_t)s->slot * D;
            size_t o = (((size_t)layer * r->n_ctx + pos[t]) * n_head_kv + h) * D;
            for (int d = 0; d < D; d++) {
                r->k[o + d] = kn_half_to_float(ks[d]);
                r->v[o + d] = kn_half_to_float(vs[d]);
            }
        }
    }
}
static void r_kv_move(struct kn_backend *be, const struct kv_slot *s, const struct kv_slot *d, int n, int D) {
    IN(be)->ops->kv_move(IN(be), s, d, n, D);
}
static void r_kv_quant(struct kn_backend *be, const struct kv_qjob *j, int n, struct kv_qfmt f) {
    IN(be)->ops->kv_quant(IN(be), j, n, f);
}
static int r_argmax(struct kn_backend *be, const float *x, int n) {
    return IN(be)->ops->argmax(IN(be), x, n);
}
static const char *r_err(struct kn_backend *be) { return IN(be)->ops->last_error(IN(be)); }
#undef IN

static void rec_init(struct rec *r, struct kn_backend *in) {
    memset(r, 0, sizeof *r);
    r->in = in;
    r->ops = (struct kn_ops){
        .name = in->ops->name,
        .free = r_free,
        .alloc = r_alloc,
        .dealloc = r_dealloc,
        .upload = r_upload,
        .download = r_download,
        .memset0 = r_memset0,
        .tensor_load = r_tload,
        .tensor_unload = r_tunload,
        .mem_info = r_mem,
        .sync = r_sync,
        .matmul = r_matmul,
        .get_rows = r_rows,
        .rmsnorm = r_rms,
        .rope = r_rope,
        .add = r_add,
        .scale = r_scale,
        .glu = r_glu,
        .attention = r_attn,
        .kv_store = r_kv_store,
        .kv_move = r_kv_move,
        .kv_quant = r_kv_quant,
        .argmax = r_argmax,
        .last_error = r_err,
    };
    r->base.ops = &r->ops;
}

// Starts recording for a model shape; forgets earlier rows.
static void rec_reset(struct rec *r, const struct model_config *c, int n_ctx) {
    free(r->k);
    free(r->v);
    r->n_layer = c->n_layer;
    r->n_ctx = n_ctx;
    r->n_kv = c->n_head_kv;
    r->hd = c->head_dim;
    r->calls = 0;
    size_t n = (size_t)c->n_layer * n_ctx * c->n_head_kv * c->head_dim;
    r->k = calloc(n, sizeof *r->k);
    r->v = calloc(n, sizeof *r->v);
}

static void rec_release(struct rec *r) {
    free(r->k);
    free(r->v);
    r->k = r->v = NULL;
}

// A snapshot of what one run stored, for the reference's tie oracle.
struct kv_rec {
    const struct rec *shape;
    float *k, *v;
};

static struct kv_rec rec_take(const struct rec *r) {
    size_t n = (size_t)r->n_layer * r->n_ctx * r->n_kv * r->hd;
    struct kv_rec s = {r, malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    memcpy(s.k, r->k, n * sizeof(float));
    memcpy(s.v, r->v, n * sizeof(float));
    return s;
}

static int rec_oracle(void *ud, int layer, int pos, int h, int is_v, int d, float *stored) {
    const struct kv_rec *s = ud;
    const struct rec *r = s->shape;
    if (layer >= r->n_layer || pos >= r->n_ctx || h >= r->n_kv || d >= r->hd) return -1;
    *stored = (is_v ? s->v : s->k)[(((size_t)layer * r->n_ctx + pos) * r->n_kv + h) * r->hd + d];
    return 0;
}

// ---- running kvchat's model ---------------------------------------------------------------------------

static struct kv_cache *kv_new(struct kn_backend *be, const struct model *m, int n_ctx) {
    const struct model_config *c = model_get_config(m);
    struct kv_cache_params p;
    kv_cache_params_default(&p);
    p.n_layer = c->n_layer;
    p.n_head_kv = c->n_head_kv;
    p.head_dim = c->head_dim;
    p.n_head = c->n_head;
    p.n_ctx = n_ctx;
    p.layer_window = model_layer_windows(m);
    char err[256];
    struct kv_cache *kv = kv_cache_init(be, &p, err, sizeof err);
    if (!kv) fprintf(stderr, "kv_cache_init: %s\n", err);
    return kv;
}

// Runs tokens [0, n) at positions pos0.. as one batch; logits of every token when all.
static int fwd(struct model *m, struct kv_cache *kv, const int32_t *tok, int pos0, int n, int phase, int all,
               float *logits) {
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    for (int i = 0; i < n; i++)
        pos[i] = pos0 + i;
    struct model_batch b = {
        .tokens = tok, .pos = pos, .flags = NULL, .n = n, .phase = phase, .logits_all = all};
    char err[256];
    int rc = model_forward(m, kv, &b, logits, err, sizeof err);
    if (rc) fprintf(stderr, "model_forward: %s\n", err);
    free(pos);
    return rc;
}

// max |a - b| / max |b| over n values.
static double rel_err(const float *a, const double *b, int n) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || d != d) num = d != d ? INFINITY : d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0.0 ? num / den : num;
}
static double rel_err_ff(const float *a, const float *b, int n) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0.0 ? num / den : num;
}

static int argmax_f(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// The reference's logits for tokens [0, n) from an empty context: (n, V).
static double *ref_logits(struct ref_model *r, const int32_t *tok, int n) {
    int V = ref_model_n_vocab(r);
    double *out = malloc((size_t)n * V * sizeof *out);
    ref_model_reset(r);
    for (int i = 0; i < n; i++)
        if (ref_model_step(r, tok[i], out + (size_t)i * V)) {
            fprintf(stderr, "ref_model_step failed at %d\n", i);
            break;
        }
    return out;
}

// Checks the per-layer retained counts after a forward: sliding-window layers hold min(n_past, window)
// tokens in every KV head, global layers all n_past (policy full).
static int check_retained(struct kv_cache *kv, const struct model *m) {
    const struct model_config *c = model_get_config(m);
    const int *win = model_layer_windows(m);
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    if (kv_cache_stats(kv, &s)) return 0;
    int n_past = kv_cache_n_past(kv), ok = 1;
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head_kv; h++) {
            int want = win[l] > 0 && win[l] < n_past ? win[l] : n_past;
            int got = s.heads[l * c->n_head_kv + h].retained;
            if (got != want) {
                fprintf(stderr, "layer %d head %d: retained %d, want %d (n_past %d)\n", l, h, got, want,
                        n_past);
                ok = 0;
            }
        }
    kv_stats_release(&s);
    return ok;
}

struct errs {
    double run[3];            // batch, decode, prefill+decode: max relative error vs the reference
    double batch_vs_decode;   // kvchat against itself
    int ties, other, kv_diff; // over the three runs: fp16 ties met, ties kvchat rounded the other way, K/V
                              // values that still differ from the reference's
};

// Compares the reference (with run's K/V as tie oracle) with logits (n, V); returns the max relative error.
static double versus_ref(struct ref_model *r, const int32_t *tok, int n, const float *logits,
                         struct kv_rec *run, struct errs *e) {
    ref_model_set_tie_oracle(r, rec_oracle, run);
    int V = ref_model_n_vocab(r);
    double *want = ref_logits(r, tok, n), worst = 0.0;
    for (int i = 0; i < n; i++) {
        double x = rel_err(logits + (size_t)i * V, want + (size_t)i * V, V);
        if (!(x <= worst)) worst = x;
    }
    int ties, other;
    ref_model_tie_counts(r, &ties, &other);
    e->ties += ties;
    e->other += other;
    const struct rec *s = run->shape;
    for (int l = 0; l < s->n_layer; l++)
        for (int p = 0; p < n; p++)
            for (int h = 0; h < s->n_kv; h++) {
                size_t o = (((size_t)l * s->n_ctx + p) * s->n_kv + h) * s->hd;
                const double *rk = ref_model_kv(r, l, p, h, 0), *rv = ref_model_kv(r, l, p, h, 1);
                for (int d = 0; d < s->hd; d++)
                    e->kv_diff += (rk[d] != run->k[o + d]) + (rv[d] != run->v[o + d]);
            }
    ref_model_set_tie_oracle(r, NULL, NULL);
    free(want);
    return worst;
}

// Batch prefill, token-by-token decoding and prefill-then-decode of n random tokens through kvchat, each
// compared with the reference; sliding-window retention checked after every forward when check_win.
static struct errs run_fixture(struct rec *rb, const char *path, int n, int n_split, uint64_t seed,
                               int check_win) {
    struct errs e = {{INFINITY, INFINITY, INFINITY}, INFINITY, 0, 0, 0};
    struct kn_backend *be = &rb->base;
    char err[512];
    struct model *m = model_load(path, be, err, sizeof err);
    struct ref_model *r = ref_model_load(path, n, err, sizeof err);
    CHECK_MSG(m != NULL && r != NULL, "%s: %s", path, err);
    struct kv_cache *kv = m ? kv_new(be, m, n) : NULL;
    CHECK(kv != NULL);
    if (!m || !r || !kv) {
        model_free(m);
        ref_model_free(r);
        return e;
    }
    const struct model_config *c = model_get_config(m);
    int V = c->n_vocab, ub = model_ubatch(m);
    CHECK_EQ_INT(V, ref_model_n_vocab(r));
    rec_reset(rb, c, n);
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)(rng_next(&seed) % (uint64_t)V);
    float *lg[3];
    struct kv_rec runs[3];
    for (int k = 0; k < 3; k++)
        lg[k] = malloc((size_t)n * V * sizeof(float));
    int win_ok = 1;

    // 1. one batch, logits of every position
    CHECK(fwd(m, kv, tok, 0, n, KV_PHASE_PROMPT_END, 1, lg[0]) == 0);
    CHECK_EQ_INT(rb->calls, (long)c->n_layer * ((n + ub - 1) / ub)); // the recorder's layer count holds
    if (check_win) win_ok &= check_retained(kv, m);
    runs[0] = rec_take(rb);
    // 2. token by token from an empty cache
    kv_cache_clear(kv);
    for (int i = 0; i < n; i++) {
        int ph = i == 0 ? KV_PHASE_PROMPT_END : KV_PHASE_DECODE;
        CHECK(fwd(m, kv, tok + i, i, 1, ph, 0, lg[1] + (size_t)i * V) == 0);
        if (check_win) win_ok &= check_retained(kv, m);
    }
    runs[1] = rec_take(rb);
    // 3. prefill of n_split tokens, then decoding
    kv_cache_clear(kv);
    CHECK(fwd(m, kv, tok, 0, n_split, KV_PHASE_PROMPT_END, 1, lg[2]) == 0);
    if (check_win) win_ok &= check_retained(kv, m);
    for (int i = n_split; i < n; i++) {
        CHECK(fwd(m, kv, tok + i, i, 1, KV_PHASE_DECODE, 0, lg[2] + (size_t)i * V) == 0);
        if (check_win) win_ok &= check_retained(kv, m);
    }
    runs[2] = rec_take(rb);
    CHECK_MSG(win_ok, "%s: sliding-window layers must keep exactly their window", path);
    // the context is full now: one more token is refused with a message, not computed
    float *spare = malloc((size_t)V * sizeof *spare);
    int32_t p_full = n;
    struct model_batch bf = {.tokens = tok, .pos = &p_full, .n = 1, .phase = KV_PHASE_DECODE};
    CHECK(model_forward(m, kv, &bf, spare, err, sizeof err) != 0 && strstr(err, "context is full"));
    free(spare);

    for (int k = 0; k < 3; k++)
        e.run[k] = versus_ref(r, tok, n, lg[k], &runs[k], &e);
    e.batch_vs_decode = 0.0;
    for (int i = 0; i < n; i++) {
        double x = rel_err_ff(lg[0] + (size_t)i * V, lg[1] + (size_t)i * V, V);
        if (!(x <= e.batch_vs_decode)) e.batch_vs_decode = x;
    }
    for (int k = 0; k < 3; k++) {
        free(lg[k]);
        free(runs[k].k);
        free(runs[k].v);
    }
    free(tok);
    kv_cache_free(kv);
    model_free(m);
    ref_model_free(r);
    return e;
}

// kvchat's batch and decode paths round different fp16 ties, each cascading to ~1e-4, so they are held to
// each other less tightly than each is held to the reference.
#define TOL_SELF 1e-3

static void check_errs(const char *name, struct errs e) {
    printf("%-26s batch %.1e  decode %.1e  prefill+decode %.1e  batch-vs-decode %.1e  ties %d (other way %d) "
           "K/V diff %d\n",
           name, e.run[0], e.run[1], e.run[2], e.batch_vs_decode, e.ties, e.other, e.kv_diff);
    CHECK_MSG(e.run[0] <= TOL, "%s batch %.3g", name, e.run[0]);
    CHECK_MSG(e.run[1] <= TOL, "%s decode %.3g", name, e.run[1]);
    CHECK_MSG(e.run[2] <= TOL, "%s prefill+decode %.3g", name, e.run[2]);
    CHECK_MSG(e.batch_vs_decode <= TOL_SELF, "%s batch vs decode %.3g", name, e.batch_vs_decode);
}

// The int8 activations of the CPU matmuls (the app's default; kernels/kn_cpu_q8.c for decode, kn_cpu_gemm8.c for
// batches; their kernels are held to the int8-rounded sums in test_kn_cpu) against the same fp32 reference: a looser bound, which a wrong kernel
// (errors of the order of the logits themselves) still breaks. Measured: 1.6e-2 to 2.3e-2 on these fixtures.
#define TOL_INT8 5e-2

static void check_int8(struct rec *be, const char *path, const char *name, int n_split, uint64_t seed) {
    kn_cpu_set_int8_act(be->in, 1);
    struct errs e = run_fixture(be, path, 20, n_split, seed, 0);
    kn_cpu_set_int8_act(be->in, 0);
    printf("%-26s int8 activations: batch %.1e  decode %.1e  prefill+decode %.1e  batch-vs-decode %.1e\n", name,
           e.run[0], e.run[1], e.run[2], e.batch_vs_decode);
    if (kn_cpu_int8_batch()) // the VNNI GEMM: batches quantise their activations as decode does
        CHECK_MSG(e.run[0] <= TOL_INT8, "%s int8: batch %.3g", name, e.run[0]);
    else
        CHECK_MSG(e.run[0] <= TOL, "%s int8: batch (fp32 path) %.3g", name, e.run[0]);
    CHECK_MSG(e.run[1] <= TOL_INT8, "%s int8: decode %.3g", name, e.run[1]);
    CHECK_MSG(e.run[2] <= TOL_INT8, "%s int8: prefill+decode %.3g", name, e.run[2]);
}

static void test_llama_types(struct rec *be) {
    static const int legacy[] = {KN_F32, KN_F16, KN_BF16, KN_Q8_0, KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1};
    static const int kq[] = {KN_Q4_K, KN_Q5_K, KN_Q6_K};
    char name[64];
    for (size_t i = 0; i < sizeof legacy / sizeof *legacy; i++) {
        struct fx f = {.arch = "llama",
                       .D = 64,
                       .L = 3,
                       .H = 4,
                       .Hkv = 2,
                       .hd = 16,
                       .F = 96,
                       .V = 300,
                       .types = &legacy[i],
                       .n_types = 1,
                       .base = 10000.0f,
                       .seed = 100 + i};
        snprintf(name, sizeof name, "llama-%s.gguf", kn_type_name(legacy[i]));
        const char *p = tmp_file(name);
        CHECK(fx_write(&f, p, FX_OK) == 0);
        check_errs(name, run_fixture(be, p, 20, 7, 7 + i, 0));
        if (legacy[i] == KN_Q8_0 || legacy[i] == KN_Q4_1 || legacy[i] == KN_Q5_0) check_int8(be, p, name, 7, 7 + i);
    }
    for (size_t i = 0; i < sizeof kq / sizeof *kq; i++) {
        struct fx f = {.arch = "llama",
                       .D = 256,
                       .L = 2,
                       .H = 4,
                       .Hkv = 2,
                       .hd = 64,
                       .F = 512,
                       .V = 300,
                       .types = &kq[i],
                       .n_types = 1,
                       .base = 10000.0f,
                       .seed = 200 + i};
        snprintf(name, sizeof name, "llama-%s.gguf", kn_type_name(kq[i]));
        const char *p = tmp_file(name);
        CHECK(fx_write(&f, p, FX_OK) == 0);
        check_errs(name, run_fixture(be, p, 20, 9, 17 + i, 0));
        check_int8(be, p, name, 9, 17 + i);
    }
    // every type in one model (tied output), legacy rows
    static const int mix[] = {KN_Q4_0, KN_F16, KN_Q8_0, KN_Q5_1, KN_BF16, KN_Q4_1, KN_F32, KN_Q5_0};
    struct fx f = {.arch = "llama",
                   .D = 64,
                   .L = 3,
                   .H = 4,
                   .Hkv = 1,
                   .hd = 16,
                   .F = 96,
                   .V = 300,
                   .types = mix,
                   .n_types = 8,
                   .tied = 1,
                   .base = 10000.0f,
                   .seed = 300};
    const char *p = tmp_file("llama-mix-tied.gguf");
    CHECK(fx_write(&f, p, FX_OK) == 0);
    check_errs("llama-mix-tied (MQA)", run_fixture(be, p, 20, 12, 33, 0));
    // k-quants mixed with legacy types, as a Q4_K_M file is
    static const int kmix[] = {KN_Q6_K, KN_Q4_K, KN_Q5_0, KN_Q5_K, KN_Q8_0, KN_Q4_K, KN_F16};
    struct fx g = {.arch = "llama",
                   .D = 256,
                   .L = 2,
                   .H = 8,
                   .Hkv = 2,
                   .hd = 32,
                   .F = 512,
                   .V = 300,
                   .types = kmix,
                   .n_types = 7,
                   .base = 500000.0f,
                   .seed = 301};
    p = tmp_file("llama-kmix.gguf");
    CHECK(fx_write(&g, p, FX_OK) == 0);
    check_errs("llama-kmix", run_fixture(be, p, 20, 5, 34, 0));
    // scalar kernels on the same mixtures
    kn_cpu_force_scalar(be->in, 1);
    check_errs("llama-mix-tied scalar", run_fixture(be, tmp_file("llama-mix-tied.gguf"), 20, 12, 33, 0));
    check_errs("llama-kmix scalar", run_fixture(be, tmp_file("llama-kmix.gguf"), 20, 5, 34, 0));
    kn_cpu_force_scalar(be->in, 0);
}

// A prompt longer than one micro-batch (model_ubatch), then decoding.
static void test_long_prompt(struct rec *be) {
    static const int t[] = {KN_Q8_0, KN_F16};
    struct fx f = {.arch = "llama",
                   .D = 64,
                   .L = 2,
                   .H = 4,
                   .Hkv = 2,
                   .hd = 16,
                   .F = 96,
                   .V = 300,
                   .types = t,
                   .n_types = 2,
                   .base = 10000.0f,
                   .seed = 400};
    const char *p = tmp_file("llama-long.gguf");
    CHECK(fx_write(&f, p, FX_OK) == 0);
    char err[256];
    struct model *m = model_load(p, &be->base, err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    int ub = model_ubatch(m), n = ub + 44;
    model_free(m);
    char name[64];
    snprintf(name, sizeof name, "llama %d tokens (ubatch %d)", n, ub);
    check_errs(name, run_fixture(be, p, n, ub + 20, 41, 0));
}

static void test_gemma(struct rec *be) {
    static const int t[] = {KN_Q8_0, KN_Q4_0, KN_F16, KN_Q5_0, KN_Q5_1, KN_BF16, KN_F32, KN_Q4_1};
    // head_dim 32 (Q = 128 != dim 64), MQA, 7 layers: layer 5 global, the others sliding (window 8)
    struct fx f = {.arch = "gemma3",
                   .D = 64,
                   .L = 7,
                   .H = 4,
                   .Hkv = 1,
                   .hd = 32,
                   .F = 128,
                   .V = 300,
                   .window = 8,
                   .types = t,
                   .n_types = 8,
                   .tied = 1,
                   .base = 1000000.0f,
                   .seed = 500};
    const char *p = tmp_file("gemma3-mix.gguf");
    CHECK(fx_write(&f, p, FX_OK) == 0);
    char err[256];
    struct model *m = model_load(p, &be->base, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (m) {
        const int *w = model_layer_windows(m);
        for (int l = 0; l < 7; l++)
            CHECK_EQ_INT(w[l], l == 5 ? 0 : 8);
        model_free(m);
    }
    check_errs("gemma3-mix w8", run_fixture(be, p, 30, 12, 51, 1));
    // k-quants, head_dim 64, and a file that names its local rope base (llama.cpp's rope.freq_base_swa)
    static const int k[] = {KN_Q4_K, KN_Q6_K, KN_Q5_K, KN_Q8_0};
    struct fx g = {.arch = "gemma3",
                   .D = 256,
                   .L = 7,
                   .H = 4,
                   .Hkv = 1,
                   .hd = 64,
                   .F = 512,
                   .V = 300,
                   .window = 8,
                   .types = k,
                   .n_types = 4,
                   .tied = 1,
                   .base = 1000000.0f,
                   .seed = 501};
    p = tmp_file("gemma3-kquant.gguf");
    CHECK(fx_write(&g, p, FX_OK) == 0);
    check_errs("gemma3-kquant w8", run_fixture(be, p, 30, 20, 52, 1));
    // ... with small QK-norm inputs (rms ~3e-3), where its epsilon (1e-6) counts
    struct fx h = {.arch = "gemma3",
                   .D = 64,
                   .L = 7,
                   .H = 2,
                   .Hkv = 1,
                   .hd = 32,
                   .F = 128,
                   .V = 300,
                   .window = 5,
                   .types = t,
                   .n_types = 8,
                   .tied = 1,
                   .base = 1000000.0f,
                   .base_swa = 1000.0f,
                   .seed = 502,
                   .qk_std = 0.003};
    p = tmp_file("gemma3-swa-base.gguf");
    CHECK(fx_write(&h, p, FX_OK) == 0);
    check_errs("gemma3 freq_base_swa w5", run_fixture(be, p, 30, 6, 53, 1));
}

// ---- stories260K ---------------------------------------------------------------------------------------

static const char *STORY =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
    "she saw a big, red ball.";
static const int STORY_IDS[10] = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317};

// Greedy generation of n tokens after BOS + encode(prompt); the ids into out_ids, the text (prompt + pieces)
// into text. 0 ok.
static int greedy(struct kn_backend *be, struct model *m, const struct tok *t, const char *prompt, int n,
                  int32_t *out_ids, char *text, size_t cap, float *first_logits) {
    int V = model_get_config(m)->n_vocab;
    int32_t ids[256];
    ids[0] = (int32_t)tok_bos(t);
    int np = tok_encode(t, prompt, ids + 1, 255);
    if (np < 0 || np > 200) return -1;
    np += 1;
    struct kv_cache *kv = kv_new(be, m, np + n);
    float *lg = malloc((size_t)V * sizeof *lg);
    int rc = kv && lg ? fwd(m, kv, ids, 0, np, KV_PHASE_PROMPT_END, 0, lg) : -1;
    if (rc == 0 && first_logits) memcpy(first_logits, lg, (size_t)V * sizeof *lg);
    size_t len = (size_t)snprintf(text, cap, "%s", prompt);
    int prev = ids[np - 1];
    for (int i = 0; i < n && rc == 0; i++) {
        int32_t next = argmax_f(lg, V);
        out_ids[i] = next;
        char piece[64];
        int k = tok_decode_piece(t, prev, next, piece, sizeof piece);
        if (len + (size_t)k < cap) {
            memcpy(text + len, piece, (size_t)k);
            len += (size_t)k;
            text[len] = 0;
        }
        prev = next;
        if (i + 1 < n) rc = fwd(m, kv, &next, np + i, 1, KV_PHASE_DECODE, 0, lg);
    }
    free(lg);
    kv_cache_free(kv);
    return rc;
}

// stories260K's arrays, read on their own from the llama2.c v0 file (header, then fp32 arrays).
struct l2c_w {
    int32_t h[7]; // dim, hidden, layers, heads, kv heads, vocab, seq_len
    int D, F, L, H, Hkv, V, KD;
    float *all; // every float after the header (incl. the unused freq_cis tables)
    size_t n_all;
    const float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final;
};

static int l2c_read(const char *bin, struct l2c_w *m) {
    memset(m, 0, sizeof *m);
    FILE *fp = fopen(bin, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size < 28 || fread(m->h, 4, 7, fp) != 7 || m->h[5] <= 0) {
        fclose(fp);
        return -1;
    }
    m->D = m->h[0], m->F = m->h[1], m->L = m->h[2], m->H = m->h[3], m->Hkv = m->h[4], m->V = m->h[5];
    m->KD = m->D / m->H * m->Hkv;
    m->n_all = (size_t)(size - 28) / 4;
    m->all = malloc(m->n_all * sizeof *m->all);
    size_t got = m->all ? fread(m->all, sizeof *m->all, m->n_all, fp) : 0;
    fclose(fp);
    size_t D = (size_t)m->D, F = (size_t)m->F, L = (size_t)m->L, KD = (size_t)m->KD;
    if (got != m->n_all ||
        m->n_all < (size_t)m->V * D + L * (2 * D + 2 * D * D + 2 * KD * D + 3 * F * D) + D) {
        free(m->all);
        return -1;
    }
    m->emb = m->all;
    m->rms_att = m->emb + (size_t)m->V * D;
    m->wq = m->rms_att + L * D;
    m->wk = m->wq + L * D * D;
    m->wv = m->wk + L * KD * D;
    m->wo = m->wv + L * KD * D;
    m->rms_ffn = m->wo + L * D * D;
    m->w1 = m->rms_ffn + L * D;
    m->w2 = m->w1 + L * F * D;
    m->w3 = m->w2 + L * D * F;
    m->rms_final = m->w3 + L * F * D;
    return 0;
}

static void put_f(FILE *f, const float *p, size_t n, int *rc) {
    if (fwrite(p, sizeof *p, n, f) != n) *rc = -1;
}

// The same model as a llama2.c version-1 file (magic "ak42", 256-byte header, norms first).
static int l2c_write_v1(const struct l2c_w *m, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char hdr[256] = {0};
    uint32_t magic = 0x616b3432u;
    int32_t ver = 1;
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, &ver, 4);
    memcpy(hdr + 8, m->h, 28);
    hdr[36] = 1; // shared classifier
    int rc = fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr ? 0 : -1;
    size_t D = (size_t)m->D, F = (size_t)m->F, L = (size_t)m->L, KD = (size_t)m->KD;
    put_f(f, m->rms_att, L * D, &rc);
    put_f(f, m->rms_ffn, L * D, &rc);
    put_f(f, m->rms_final, D, &rc);
    put_f(f, m->emb, (size_t)m->V * D, &rc);
    put_f(f, m->wq, L * D * D, &rc);
    put_f(f, m->wk, L * KD * D, &rc);
    put_f(f, m->wv, L * KD * D, &rc);
    put_f(f, m->wo, L * D * D, &rc);
    put_f(f, m->w1, L * F * D, &rc);
    put_f(f, m->w2, L * D * F, &rc);
    put_f(f, m->w3, L * F * D, &rc);
    return fclose(f) == 0 ? rc : -1;
}

// The v0 file with a separate classifier: negative vocab size, a copy of the embeddings appended.
static int l2c_write_v0_unshared(const struct l2c_w *m, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int32_t h[7];
    memcpy(h, m->h, sizeof h);
    h[5] = -h[5];
    int rc = fwrite(h, 4, 7, f) == 7 ? 0 : -1;
    put_f(f, m->all, m->n_all, &rc);
    put_f(f, m->emb, (size_t)m->V * m->D, &rc);
    return fclose(f) == 0 ? rc : -1;
}

// Writes the model as a llama GGUF (F32, llama.cpp's tensor names), with the vocabulary of `t`.
static int stories_to_gguf(const struct l2c_w *m, const struct tok *t, const char *out) {
    int D = m->D, F = m->F, L = m->L, KD = m->KD, V = m->V;
    struct gguf_writer *w = gguf_writer_init();
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_str(w, "general.name", "stories260K");
    gguf_w_u32(w, "llama.context_length", (uint32_t)m->h[6]);
    gguf_w_u32(w, "llama.embedding_length", (uint32_t)D);
    gguf_w_u32(w, "llama.block_count", (uint32_t)L);
    gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)F);
    gguf_w_u32(w, "llama.attention.head_count", (uint32_t)m->H);
    gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)m->Hkv);
    gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)(D / m->H));
    gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_w_f32(w, "llama.rope.freq_base", 10000.0f);
    int nv = tok_n_vocab(t);
    const char **pieces = malloc((size_t)nv * sizeof *pieces);
    float *scores = malloc((size_t)nv * sizeof *scores);
    int32_t *types = malloc((size_t)nv * sizeof *types);
    for (int i = 0; i < nv; i++) {
        pieces[i] = tok_piece(t, i);
        scores[i] = tok_score(t, i);
        types[i] = tok_type(t, i);
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", pieces, (uint64_t)nv);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)nv);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)nv);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    free(pieces);
    free(scores);
    free(types);
    int rc = 0;
    char nm[96];
#define ADD(name, cols, rows, src)                                                                           \
    do {                                                                                                     \
        int64_t ne_[2] = {(cols), (rows)};                                                                   \
        rc |= gguf_w_tensor_f32(w, name, KN_F32, (rows) == 1 ? 1 : 2, ne_, (src));                           \
    } while (0)
    ADD("token_embd.weight", D, V, m->emb);
    const float *rms_att = m->rms_att, *wq = m->wq, *wk = m->wk, *wv = m->wv, *wo = m->wo,
                *rms_ffn = m->rms_ffn;
    const float *w1 = m->w1, *w2 = m->w2, *w3 = m->w3, *rms_final = m->rms_final;
    ADD("output_norm.weight", D, 1, rms_final);
    for (int l = 0; l < L; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        ADD(nm, D, 1, rms_att + (size_t)l * D);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        ADD(nm, D, D, wq + (size_t)l * D * D);
        snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
        ADD(nm, D, KD, wk + (size_t)l * KD * D);
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        ADD(nm, D, KD, wv + (size_t)l * KD * D);
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l);
        ADD(nm, D, D, wo + (size_t)l * D * D);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        ADD(nm, D, 1, rms_ffn + (size_t)l * D);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", l);
        ADD(nm, D, F, w1 + (size_t)l * F * D);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        ADD(nm, F, D, w2 + (size_t)l * D * F);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
        ADD(nm, D, F, w3 + (size_t)l * F * D);
    }
#undef ADD
    char err[256];
    if (rc == 0) rc = gguf_writer_save(w, out, err, sizeof err);
    gguf_writer_free(w);
    return rc;
}

static void test_stories(struct rec *rb) {
    struct kn_backend *be = &rb->base;
    const char *dir = test_shared_models();
    if (!dir) {
        TEST_SKIP("stories260K: ../shared/models not found");
        return;
    }
    char bin[4200], tm[4200], err[512];
    snprintf(bin, sizeof bin, "%s/stories260K/stories260K.bin", dir);
    snprintf(tm, sizeof tm, "%s/stories260K/tok512.model", dir);
    struct model *m = model_load(bin, be, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    struct tok *t = tok_load_model(tm, err, sizeof err);
    CHECK_MSG(t != NULL, "%s", err);
    if (!m || !t) {
        model_free(m);
        tok_free(t);
        return;
    }
    const struct model_config *c = model_get_config(m);
    CHECK(c->n_embd == 64 && c->n_layer == 5 && c->n_head == 8 && c->n_head_kv == 4 && c->n_ff == 172 &&
          c->n_vocab == 512 && c->head_dim == 8 && model_get_gguf(m) == NULL);
    int32_t ids[40], ids2[40];
    char text[1024], text2[1024];
    float *l1 = malloc(512 * sizeof *l1), *l2 = malloc(512 * sizeof *l2);
    CHECK(greedy(be, m, t, "Once upon a time", 40, ids, text, sizeof text, l1) == 0);
    int ok = 1;
    for (int i = 0; i < 10; i++)
        ok &= ids[i] == STORY_IDS[i];
    CHECK_MSG(ok, "stories260K greedy ids start %d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);
    CHECK_MSG(strcmp(text, STORY) == 0, "stories260K text: '%s'", text);

    // the same weights in llama2.c's version-1 layout, and in v0 with a separate classifier: same logits
    struct l2c_w w;
    int have_w = l2c_read(bin, &w) == 0;
    CHECK(have_w);
    const char *v1 = tmp_file("stories260K-v1.bin"), *v0u = tmp_file("stories260K-unshared.bin");
    if (have_w) {
        CHECK(l2c_write_v1(&w, v1) == 0);
        CHECK(l2c_write_v0_unshared(&w, v0u) == 0);
    }
    const char *variants[] = {v1, v0u};
    for (int k = 0; k < 2 && have_w; k++) {
        struct model *mv = model_load(variants[k], be, err, sizeof err);
        CHECK_MSG(mv != NULL, "%s", err);
        if (!mv) continue;
        int32_t idv[40];
        char tv[1024];
        CHECK(greedy(be, mv, t, "Once upon a time", 40, idv, tv, sizeof tv, l2) == 0);
        CHECK_MSG(memcmp(l1, l2, 512 * sizeof *l1) == 0 && strcmp(tv, STORY) == 0,
                  "%s differs from the v0 file", variants[k]);
        model_free(mv);
    }

    // the same weights and vocabulary as a GGUF
    const char *gp = tmp_file("stories260K.gguf");
    CHECK(have_w && stories_to_gguf(&w, t, gp) == 0);
    if (have_w) free(w.all);
    struct model *mg = model_load(gp, be, err, sizeof err);
    CHECK_MSG(mg != NULL, "%s", err);
    struct tok *tg = mg ? tok_load_gguf(model_get_gguf(mg), err, sizeof err) : NULL;
    CHECK_MSG(tg != NULL, "%s", err);
    if (mg && tg) {
        // (no whitespace runs: tok512.model's normalizer collapses them, which GGUF vocabularies cannot say)
        static const char *texts[] = {"Once upon a time, there was a little girl named Lily.",
                                      "Tom's dog ran\tto the park!\n\"Yes,\" said Mom. 123 + 456 = 579",
                                      "caf\xc3\xa9 na\xc3\xafve \xe2\x9c\x93 \xf0\x9f\x98\x80 <s> </s>", ""};
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            int32_t a[256], b[256];
            int na = tok_encode(t, texts[i], a, 256), nb = tok_encode(tg, texts[i], b, 256);
            CHECK_MSG(na == nb && na >= 0 && memcmp(a, b, (size_t)na * sizeof *a) == 0,
                      "GGUF vocabulary encodes '%s' differently (%d vs %d ids)", texts[i], nb, na);
        }
        CHECK_EQ_INT(tok_bos(tg), 1);
        CHECK_EQ_INT(tok_eos(tg), 2);
        CHECK(greedy(be, mg, tg, "Once upon a time", 40, ids2, text2, sizeof text2, l2) == 0);
        CHECK(memcmp(ids, ids2, sizeof ids) == 0);
        CHECK_MSG(strcmp(text2, STORY) == 0, "stories260K GGUF text: '%s'", text2);
        // identical F32 weights on the same kernels: identical logits
        CHECK(memcmp(l1, l2, 512 * sizeof *l1) == 0);
        // and the real weights against the reference: prompt + 23 generated tokens as one batch
        struct ref_model *r = ref_model_load(gp, 24, err, sizeof err);
        CHECK_MSG(r != NULL, "%s", err);
        struct kv_cache *kv = kv_new(be, mg, 24);
        if (r && kv) {
            int32_t seq[24];
            seq[0] = 1;
            memcpy(seq + 1, ids, 23 * sizeof *seq);
            float *lb = malloc(24 * 512 * sizeof *lb);
            rec_reset(rb, model_get_config(mg), 24);
            CHECK(fwd(mg, kv, seq, 0, 24, KV_PHASE_PROMPT_END, 1, lb) == 0);
            struct kv_rec run = rec_take(rb);
            struct errs e = {{0}, 0, 0, 0, 0};
            double x = versus_ref(r, seq, 24, lb, &run, &e);
            printf("%-26s batch %.1e  ties %d (other way %d) K/V diff %d\n", "stories260K.gguf", x, e.ties,
                   e.other, e.kv_diff);
            CHECK_MSG(x <= TOL, "stories260K vs reference %.3g", x);
            free(run.k);
            free(run.v);
            free(lb);
        }
        kv_cache_free(kv);
        ref_model_free(r);
    }
    free(l1);
    free(l2);
    tok_free(tg);
    model_free(mg);
    tok_free(t);
    model_free(m);
}

// ---- bad files -----------------------------------------------------------------------------------------

// model_load must fail with one non-empty line that contains one of the '|'-separated keywords.
static void expect_fail(struct kn_backend *be, const char *path, const char *keywords) {
    char err[512];
    err[0] = 0;
    struct model *m = model_load(path, be, err, sizeof err);
    CHECK_MSG(m == NULL, "%s loaded", path);
    model_free(m);
    CHECK_MSG(err[0] && !strchr(err, '\n'), "%s: error must be one non-empty line: '%s'", path, err);
    int found = 0;
    for (const char *k = keywords; *k && !found;) {
        size_t n = strcspn(k, "|");
        char one[64];
        snprintf(one, sizeof one, "%.*s", (int)n, k);
        found = strstr(err, one) != NULL;
        k += n + (k[n] == '|');
    }
    CHECK_MSG(found, "%s: error '%s' lacks any of '%s'", path, err, keywords);
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = fwrite(p, 1, n, f);
    return fclose(f) == 0 && k == n ? 0 : -1;
}

static void test_bad_files(struct kn_backend *be) {
    char path[400];
    snprintf(path, sizeof path, "%s/does-not-exist.gguf", tmpdir);
    expect_fail(be, path, "cannot open");
    const char *p = tmp_file("zero.gguf");
    CHECK(write_bytes(p, "", 0) == 0);
    expect_fail(be, p, "empty file");
    unsigned char junk[4096];
    uint64_t s = 99;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rng_next(&s);
    p = tmp_file("junk.bin");
    CHECK(write_bytes(p, junk, sizeof junk) == 0);
    expect_fail(be, p, "bad magic");
    memcpy(junk, "GGUF", 4);
    p = tmp_file("junk.gguf");
    CHECK(write_bytes(p, junk, sizeof junk) == 0);
    expect_fail(be, p, "version");

    static const int t[] = {KN_Q8_0};
    struct fx f = {.arch = "llama",
                   .D = 64,
                   .L = 2,
                   .H = 4,
                   .Hkv = 2,
                   .hd = 16,
                   .F = 96,
                   .V = 300,
                   .types = t,
                   .n_types = 1,
                   .base = 10000.0f,
                   .seed = 600};
    struct {
        int brk;
        const char *name, *keyword;
    } cases[] = {
        {FX_NO_TENSOR, "no-tensor.gguf", "blk.1.attn_k.weight"},
        {FX_BAD_SHAPE, "bad-shape.gguf", "shape"},
        {FX_BAD_ARCH, "bad-arch.gguf", "mamba"},
        {FX_ZERO_LAYERS, "zero-layers.gguf", "layers 0"},
        {FX_BAD_HEADS, "bad-heads.gguf", "heads 4/3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        p = tmp_file(cases[i].name);
        CHECK(fx_write(&f, p, cases[i].brk) == 0);
        expect_fail(be, p, cases[i].keyword);
    }
    // a good GGUF cut short: every prefix length class fails cleanly
    p = tmp_file("good.gguf");
    CHECK(fx_write(&f, p, FX_OK) == 0);
    FILE *fp = fopen(p, "rb");
    CHECK(fp != NULL);
    if (fp) {
        fseek(fp, 0, SEEK_END);
        long n = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        unsigned char *b = malloc((size_t)n);
        CHECK(fread(b, 1, (size_t)n, fp) == (size_t)n);
        fclose(fp);
        const char *q = tmp_file("cut.gguf");
        long cuts[] = {3, 4, 8, 24, 100, 1000, n / 2, n - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
            CHECK(write_bytes(q, b, (size_t)cuts[i]) == 0);
            expect_fail(be, q, "truncated|does not fit|exceeds|bad magic");
        }
        free(b);
    }
    // a llama2.c checkpoint cut short (same header as stories260K: dim 64, ffn 172, 5 layers, 8/4 heads)
    int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    unsigned char l2[28 + 4096];
    memcpy(l2, hdr, 28);
    memset(l2 + 28, 0, 4096);
    p = tmp_file("short.bin");
    CHECK(write_bytes(p, l2, sizeof l2) == 0);
    expect_fail(be, p, "truncated");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kvchat_test_model_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char err[256];
    struct kn_backend *cpu = kn_cpu_init(2, err, sizeof err);
    CHECK_MSG(cpu != NULL, "%s", err);
    if (cpu) {
        kn_cpu_set_int8_act(cpu, 0); // the default (fp32 activations); check_int8 turns int8 on

        struct rec rb;
        rec_init(&rb, cpu);
        test_llama_types(&rb);
        test_long_prompt(&rb);
        test_gemma(&rb);
        test_stories(&rb);
        test_bad_files(cpu);
        rec_release(&rb);
        kn_free(cpu);
    }
    if (getenv("KVCHAT_TEST_KEEP")) { // debugging: leave the fixtures for a look
        printf("fixtures kept in %s\n", tmpdir);
    } else {
        for (int i = 0; i < made.n; i++)
            unlink(made.p[i]);
        rmdir(tmpdir);
    }
    return test_done();
}
