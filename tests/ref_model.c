// tests/ref_model.c — naive double-precision llama / gemma3 forward pass, one token at a time (see
// ref_model.h).
#include "tests/ref_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kn_quant.h"
#include "kernels/kn_types.h"
#include "model/gguf.h"

// One dense matrix (rows x cols, row-major) or vector (rows == 1), dequantised.
struct ref_mat {
    int rows, cols;
    double *w;
};

struct ref_layer {
    struct ref_mat attn_norm, q, k, v, o, ffn_norm, gate, up, down;
    struct ref_mat q_norm, k_norm, post_attn_norm, post_ffn_norm; // gemma3
};

struct ref_model {
    int gemma; // 0 llama, 1 gemma3
    int dim, n_layer, n_head, n_kv, hd, ffn, vocab, n_rot;
    double eps, base, base_local, pos_scale;
    int window; // gemma3 sliding window of local layers
    struct ref_mat embd, out_norm, out;
    int tied;
    struct ref_layer *layers;
    int n_ctx, n_past;
    ref_tie_fn tie;
    void *tie_ud;
    int n_ties, n_other;
    double *kc, *vc; // (n_layer, n_ctx, n_kv, hd), fp16-rounded values
    double *x, *xn, *qv, *kv_k, *kv_v, *att, *proj, *g, *u, *hid, *score; // scratch
};

static void mat_free(struct ref_mat *m) {
    free(m->w);
    m->w = NULL;
}

// Reads tensor `name` as [cols, rows] (GGUF ne[0] = cols) into m. 0 ok, 1 absent and optional, -1 error.
static int load_mat(const struct gguf *g, struct ref_mat *m, const char *name, int cols, int rows,
                    int optional, char *err, size_t errlen) {
    const struct gguf_tensor_info *t = gguf_find_tensor(g, name);
    if (!t) {
        if (optional) return 1;
        snprintf(err, errlen, "ref: tensor %s missing", name);
        return -1;
    }
    long long r = 1;
    for (int d = 1; d < t->n_dims; d++)
        r *= t->ne[d];
    if (t->ne[0] != cols || r != rows) {
        snprintf(err, errlen, "ref: tensor %s has shape [%lld, %lld], want [%d, %d]", name,
                 (long long)t->ne[0], r, cols, rows);
        return -1;
    }
    size_t row_bytes = kn_row_bytes(t->type, cols);
    float *tmp = malloc((size_t)cols * sizeof *tmp);
    m->w = malloc((size_t)rows * (size_t)cols * sizeof *m->w);
    if (!tmp || !m->w || row_bytes == 0) {
        free(tmp);
        snprintf(err, errlen, "ref: cannot read tensor %s (type %d)", name, t->type);
        return -1;
    }
    m->rows = rows;
    m->cols = cols;
    const unsigned char *src = t->data;
    for (int i = 0; i < rows; i++) {
        if (kn_dequant_row(t->type, src + (size_t)i * row_bytes, tmp, cols)) {
            free(tmp);
            snprintf(err, errlen, "ref: cannot dequantise tensor %s", name);
            return -1;
        }
        for (int j = 0; j < cols; j++)
            m->w[(size_t)i * cols + j] = (double)tmp[j];
    }
    free(tmp);
    return 0;
}

static int get_int(const struct gguf *g, const char *arch, const char *key, int dflt, int *out) {
    char k[160];
    uint32_t v;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_get_u32(g, k, &v) == 0) {
        *out = (int)v;
        return 1;
    }
    *out = dflt;
    return 0;
}

static double get_real(const struct gguf *g, const char *arch, const char *key, double dflt) {
    char k[160];
    float v;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_get_f32(g, k, &v) == 0 ? (double)v : dflt;
}

void ref_model_free(struct ref_model *r) {
    if (!r) return;
    if (r->layers) {
        for (int l = 0; l < r->n_layer; l++) {
            struct ref_layer *y = &r->layers[l];
            struct ref_mat *all[] = {
                &y->attn_norm,    &y->q,  &y->k,    &y->v,      &y->o,      &y->ffn_norm,
                &y->gate,         &y->up, &y->down, &y->q_norm, &y->k_norm, &y->post_attn_norm,
                &y->post_ffn_norm};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++)
                mat_free(all[i]);
        }
        free(r->layers);
    }
    mat_free(&r->embd);
    mat_free(&r->out_norm);
    if (!r->tied) mat_free(&r->out);
    double *bufs[] = {r->kc,  r->vc,   r->x, r->xn, r->qv,  r->kv_k, r->kv_v,
                      r->att, r->proj, r->g, r->u,  r->hid, r->score};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    free(r);
}

static int load_all(struct ref_model *r, const struct gguf *g, int n_ctx, char *err, size_t errlen) {
    const char *s;
    size_t n;
    char arch[32];
    if (gguf_get_str(g, "general.architecture", &s, &n)) {
        snprintf(err, errlen, "ref: no general.architecture");
        return -1;
    }
    snprintf(arch, sizeof arch, "%.*s", (int)(n < 31 ? n : 31), s);
    if (strcmp(arch, "gemma3") == 0)
        r->gemma = 1;
    else if (strcmp(arch, "llama") != 0) {
        snprintf(err, errlen, "ref: architecture %s not handled", arch);
        return -1;
    }
    get_int(g, arch, "embedding_length", 0, &r->dim);
    get_int(g, arch, "block_count", 0, &r->n_layer);
    get_int(g, arch, "feed_forward_length", 0, &r->ffn);
    get_int(g, arch, "attention.head_count", 0, &r->n_head);
    get_int(g, arch, "attention.head_count_kv", r->n_head, &r->n_kv);
    if (r->dim <= 0 || r->n_layer <= 0 || r->ffn <= 0 || r->n_head <= 0 || r->n_kv <= 0 ||
        r->n_head % r->n_kv) {
        snprintf(err, errlen, "ref: bad hyper-parameters");
        return -1;
    }
    get_int(g, arch, "attention.key_length", r->dim / r->n_head, &r->hd);
    get_int(g, arch, "rope.dimension_count", r->hd, &r->n_rot);
    r->eps = get_real(g, arch, "attention.layer_norm_rms_epsilon", r->gemma ? 1e-6 : 1e-5);
    r->base = get_real(g, arch, "rope.freq_base", 10000.0);
    // Gemma 3 local layers: base 10000 unless the file says otherwise (llama.cpp's key name)
    r->base_local = get_real(g, arch, "rope.freq_base_swa", 10000.0);
    double factor = get_real(g, arch, "rope.scaling.factor", 1.0);
    r->pos_scale = factor > 0.0 ? 1.0 / factor : 1.0;
    get_int(g, arch, "attention.sliding_window", 512, &r->window);
    if (!r->gemma) r->window = 0;
    const struct gguf_tensor_info *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te || te->n_dims != 2) {
        snprintf(err, errlen, "ref: token_embd.weight missing");
        return -1;
    }
    r->vocab = (int)te->ne[1];
    int D = r->dim, QD = r->n_head * r->hd, KD = r->n_kv * r->hd;
    if (load_mat(g, &r->embd, "token_embd.weight", D, r->vocab, 0, err, errlen) ||
        load_mat(g, &r->out_norm, "output_norm.weight", D, 1, 0, err, errlen))
        return -1;
    int rc = load_mat(g, &r->out, "output.weight", D, r->vocab, 1, err, errlen);
    if (rc < 0) return -1;
    if (rc == 1) {
        r->out = r->embd;
        r->tied = 1;
    }
    r->layers = calloc((size_t)r->n_layer, sizeof *r->layers);
    if (!r->layers) return -1;
    for (int l = 0; l < r->n_layer; l++) {
        struct ref_layer *y = &r->layers[l];
        struct {
            struct ref_mat *m;
            const char *suffix;
            int cols, rows, gemma_only;
        } list[] = {
            {&y->attn_norm, "attn_norm", D, 1, 0},
            {&y->q, "attn_q", D, QD, 0},
            {&y->k, "attn_k", D, KD, 0},
            {&y->v, "attn_v", D, KD, 0},
            {&y->o, "attn_output", QD, D, 0},
            {&y->ffn_norm, "ffn_norm", D, 1, 0},
            {&y->gate, "ffn_gate", D, r->ffn, 0},
            {&y->up, "ffn_up", D, r->ffn, 0},
            {&y->down, "ffn_down", r->ffn, D, 0},
            {&y->q_norm, "attn_q_norm", r->hd, 1, 1},
            {&y->k_norm, "attn_k_norm", r->hd, 1, 1},
            {&y->post_attn_norm, "post_attention_norm", D, 1, 1},
            {&y->post_ffn_norm, "post_ffw_norm", D, 1, 1},
        };
        for (size_t i = 0; i < sizeof list / sizeof *list; i++) {
            if (list[i].gemma_only && !r->gemma) continue;
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, list[i].suffix);
            if (load_mat(g, list[i].m, name, list[i].cols, list[i].rows, 0, err, errlen)) return -1;
        }
    }
    r->n_ctx = n_ctx;
    size_t cache = (size_t)r->n_layer * (size_t)n_ctx * (size_t)KD;
    int big = QD > D ? QD : D;
    r->kc = calloc(cache, sizeof(double));
    r->vc = calloc(cache, sizeof(double));
    r->x = calloc((size_t)D, sizeof(double));
    r->xn = calloc((size_t)big, sizeof(double));
    r->qv = calloc((size_t)QD, sizeof(double));
    r->kv_k = calloc((size_t)KD, sizeof(double));
    r->kv_v = calloc((size_t)KD, sizeof(double));
    r->att = calloc((size_t)QD, sizeof(double));
    r->proj = calloc((size_t)big, sizeof(double));
    r->g = calloc((size_t)r->ffn, sizeof(double));
    r->u = calloc((size_t)r->ffn, sizeof(double));
    r->hid = calloc((size_t)r->ffn, sizeof(double));
    r->score = calloc((size_t)n_ctx, sizeof(double));
    if (!r->kc || !r->vc || !r->x || !r->xn || !r->qv || !r->kv_k || !r->kv_v || !r->att || !r->proj ||
        !r->g || !r->u || !r->hid || !r->score) {
        snprintf(err, errlen, "ref: out of memory");
        return -1;
    }
    return 0;
}

struct ref_model *ref_model_load(const char *path, int n_ctx, char *err, size_t errlen) {
    struct gguf *g = gguf_open(path, err, errlen);
    if (!g) return NULL;
    struct ref_model *r = calloc(1, sizeof *r);
    if (!r || n_ctx <= 0 || load_all(r, g, n_ctx, err, errlen)) {
        if (r && n_ctx <= 0) snprintf(err, errlen, "ref: bad n_ctx");
        ref_model_free(r);
        gguf_close(g);
        return NULL;
    }
    gguf_close(g);
    return r;
}

int ref_model_n_vocab(const struct ref_model *r) { return r->vocab; }
int ref_model_n_past(const struct ref_model *r) { return r->n_past; }
void ref_model_reset(struct ref_model *r) {
    r->n_past = 0;
    r->n_ties = r->n_other = 0;
}
int ref_model_head_dim(const struct ref_model *r) { return r->hd; }

void ref_model_set_tie_oracle(struct ref_model *r, ref_tie_fn fn, void *ud) {
    r->tie = fn;
    r->tie_ud = ud;
}

void ref_model_tie_counts(const struct ref_model *r, int *n_ties, int *n_other) {
    *n_ties = r->n_ties;
    *n_other = r->n_other;
}

const double *ref_model_kv(const struct ref_model *r, int layer, int pos, int h, int is_v) {
    size_t KD = (size_t)r->n_kv * r->hd;
    return (is_v ? r->vc : r->kc) + ((size_t)layer * r->n_ctx + pos) * KD + (size_t)h * r->hd;
}

// y(rows) = W x
static void matvec(const struct ref_mat *m, const double *x, double *y) {
    for (int i = 0; i < m->rows; i++) {
        double s = 0.0;
        const double *w = m->w + (size_t)i * m->cols;
        for (int j = 0; j < m->cols; j++)
            s += w[j] * x[j];
        y[i] = s;
    }
}

// y = x / sqrt(mean(x^2) + eps) * w, over n values (y may be x)
static void rmsnorm(double *y, const double *x, const double *w, int n, double eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * inv * w[i];
}

// Rotates one head's first n_rot values: pairs (2i, 2i+1) for llama, (i, i + n_rot/2) for gemma3 (NEOX).
static void rotate(double *v, int n_rot, int neox, double pos, double base) {
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double theta = pos * pow(base, -2.0 * i / n_rot);
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * cos(theta) - x1 * sin(theta);
        v[b] = x0 * sin(theta) + x1 * cos(theta);
    }
}

static double fp16(double x) { return (double)kn_half_to_float(kn_float_to_half((float)x)); }

// Rounds one head's key or value vector src (hd) to fp16 into dst, resolving ties through the oracle.
static void store_fp16(struct ref_model *r, double *dst, const double *src, int layer, int pos, int h,
                       int is_v) {
    double ss = 0.0;
    for (int d = 0; d < r->hd; d++)
        ss += src[d] * src[d];
    double rms = sqrt(ss / r->hd);
    for (int d = 0; d < r->hd; d++) {
        double x = src[d], tol = REF_TIE_EPS * (fabs(x) + rms);
        double lo = fp16(x - tol), hi = fp16(x + tol), own = fp16(x);
        dst[d] = own;
        if (lo == hi) continue;
        r->n_ties++;
        float got;
        if (r->tie && r->tie(r->tie_ud, layer, pos, h, is_v, d, &got) == 0 &&
            ((double)got == lo || (double)got == hi)) {
            dst[d] = (double)got;
            r->n_other += (double)got != own;
        }
    }
}

int ref_model_step(struct ref_model *r, int token, double *logits) {
    if (r->n_past >= r->n_ctx || token < 0 || token >= r->vocab) return -1;
    int D = r->dim, hd = r->hd, KD = r->n_kv * hd, p = r->n_past;
    int group = r->n_head / r->n_kv;
    double *x = r->x;
    for (int i = 0; i < D; i++)
        x[i] = r->embd.w[(size_t)token * D + i];
    if (r->gemma)
        for (int i = 0; i < D; i++)
            x[i] *= sqrt((double)D);
    for (int l = 0; l < r->n_layer; l++) {
        const struct ref_layer *y = &r->layers[l];
        int local = r->gemma && (l + 1) % 6 != 0;
        rmsnorm(r->xn, x, y->attn_norm.w, D, r->eps);
        matvec(&y->q, r->xn, r->qv);
        matvec(&y->k, r->xn, r->kv_k);
        matvec(&y->v, r->xn, r->kv_v);
        if (r->gemma) {
            for (int h = 0; h < r->n_head; h++)
                rmsnorm(r->qv + h * hd, r->qv + h * hd, y->q_norm.w, hd, r->eps);
            for (int h = 0; h < r->n_kv; h++)
                rmsnorm(r->kv_k + h * hd, r->kv_k + h * hd, y->k_norm.w, hd, r->eps);
        }
        double base = local ? r->base_local : r->base;
        double pos = local ? (double)p : (double)p * r->pos_scale;
        for (int h = 0; h < r->n_head; h++)
            rotate(r->qv + h * hd, r->n_rot, r->gemma, pos, base);
        for (int h = 0; h < r->n_kv; h++)
            rotate(r->kv_k + h * hd, r->n_rot, r->gemma, pos, base);
        double *kl = r->kc + ((size_t)l * r->n_ctx) * KD, *vl = r->vc + ((size_t)l * r->n_ctx) * KD;
        for (int h = 0; h < r->n_kv; h++) {
            store_fp16(r, kl + (size_t)p * KD + h * hd, r->kv_k + h * hd, l, p, h, 0);
            store_fp16(r, vl + (size_t)p * KD + h * hd, r->kv_v + h * hd, l, p, h, 1);
        }
        int first =
            local && p - r->window + 1 > 0 ? p - r->window + 1 : 0; // local: the last `window` positions
        for (int h = 0; h < r->n_head; h++) {
            int kh = h / group;
            const double *q = r->qv + h * hd;
            double mx = -INFINITY;
            for (int j = first; j <= p; j++) {
                const double *k = kl + (size_t)j * KD + kh * hd;
                double s = 0.0;
                for (int d = 0; d < hd; d++)
                    s += q[d] * k[d];
                s /= sqrt((double)hd);
                r->score[j] = s;
                if (s > mx) mx = s;
            }
            double sum = 0.0;
            for (int j = first; j <= p; j++) {
                r->score[j] = exp(r->score[j] - mx);
                sum += r->score[j];
            }
            double *o = r->att + h * hd;
            for (int d = 0; d < hd; d++)
                o[d] = 0.0;
            for (int j = first; j <= p; j++) {
                const double *v = vl + (size_t)j * KD + kh * hd;
                for (int d = 0; d < hd; d++)
                    o[d] += r->score[j] / sum * v[d];
            }
        }
        matvec(&y->o, r->att, r->proj);
        if (r->gemma) rmsnorm(r->proj, r->proj, y->post_attn_norm.w, D, r->eps);
        for (int i = 0; i < D; i++)
            x[i] += r->proj[i];
        rmsnorm(r->xn, x, y->ffn_norm.w, D, r->eps);
        matvec(&y->gate, r->xn, r->g);
        matvec(&y->up, r->xn, r->u);
        for (int i = 0; i < r->ffn; i++) {
            double a = r->g[i], act;
            if (r->gemma)
                act = 0.5 * a * (1.0 + tanh(sqrt(2.0 / acos(-1.0)) * (a + 0.044715 * a * a * a)));
            else
                act = a / (1.0 + exp(-a));
            r->hid[i] = act * r->u[i];
        }
        matvec(&y->down, r->hid, r->proj);
        if (r->gemma) rmsnorm(r->proj, r->proj, y->post_ffn_norm.w, D, r->eps);
        for (int i = 0; i < D; i++)
            x[i] += r->proj[i];
    }
    rmsnorm(r->xn, x, r->out_norm.w, D, r->eps);
    matvec(&r->out, r->xn, logits);
    r->n_past++;
    return 0;
}
