// model/model.c — model loading (GGUF llama/gemma3, llama2.c) and the forward pass over backend ops.
#include "model/model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kn_quant.h"
#include "model/gguf.h"
#include "model/llama2c.h"

struct layer_w {
    struct kn_tensor attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
    struct kn_tensor q_norm, k_norm, post_attn_norm, post_ffw_norm; // gemma3
};

struct model {
    struct model_config c;
    struct kn_backend *be;
    struct gguf *g;
    struct llama2c_file l2c;
    struct kn_tensor tok_embd, output_norm, output;
    int tied;
    struct layer_w *layers;
    int windows[MODEL_MAX_LAYERS];
    uint64_t weight_bytes;
    // scratch (backend memory), sized for ubatch tokens
    int ubatch, logit_rows;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *logits_dev;
};

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// ---- GGUF ---------------------------------------------------------------------------------------

static int meta_u32(const struct gguf *g, const char *arch, const char *key, uint32_t *out, int required,
                    const char *bn, char *err, size_t errlen) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int rc = gguf_get_u32(g, k, out);
    if (rc == 0) return 0;
    if (rc == -1 && !required) return 1;
    snprintf(err, errlen, "%s: metadata '%s' %s", bn, k, rc == -1 ? "is missing" : "has the wrong type");
    return -1;
}

static int meta_f32(const struct gguf *g, const char *arch, const char *key, float *out, float dflt) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_get_f32(g, k, out) != 0) *out = dflt;
    return 0;
}

// Binds tensor `name` with the expected shape [ne0, ne1] (ne1 = 1 for vectors).
static int bind(struct model *m, struct kn_tensor *t, const char *name, int64_t ne0, int64_t ne1, int required,
                const char *bn, char *err, size_t errlen) {
    const struct gguf_tensor_info *ti = gguf_find_tensor(m->g, name);
    if (!ti) {
        if (!required) return 1;
        snprintf(err, errlen, "%s: tensor '%s' is missing", bn, name);
        return -1;
    }
    int64_t rows = 1;
    for (int d = 1; d < ti->n_dims; d++) rows *= ti->ne[d];
    if (ti->ne[0] != ne0 || rows != ne1) {
        snprintf(err, errlen, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", bn, name,
                 (long long)ti->ne[0], (long long)rows, (long long)ne0, (long long)ne1);
        return -1;
    }
    if (!kn_type_supported(ti->type)) {
        snprintf(err, errlen, "%s: tensor '%s' has type %s, which kvchat cannot compute on", bn, name,
                 kn_type_name(ti->type));
        return -1;
    }
    if (ne1 == 1 && ti->type != KN_F32) {
        snprintf(err, errlen, "%s: norm tensor '%s' must be F32 (is %s)", bn, name, kn_type_name(ti->type));
        return -1;
    }
    t->type = ti->type;
    t->n_cols = ne0;
    t->n_rows = ne1;
    t->nbytes = ti->nbytes;
    if (m->be->ops->tensor_load(m->be, t, ti->data)) {
        snprintf(err, errlen, "%s: cannot load tensor '%s' on %s: %s", bn, name, m->be->ops->name,
                 m->be->ops->last_error(m->be));
        return -1;
    }
    m->weight_bytes += t->nbytes;
    return 0;
}

static void detect_template(struct model *m) {
    const char *s;
    size_t n;
    m->c.chat_template[0] = 0;
    if (gguf_get_str(m->g, "tokenizer.chat_template", &s, &n) == 0) {
        char buf[8192];
        size_t k = n < sizeof buf - 1 ? n : sizeof buf - 1;
        memcpy(buf, s, k);
        buf[k] = 0;
        const char *name = "";
        if (strstr(buf, "<start_of_turn>"))
            name = "gemma";
        else if (strstr(buf, "<|im_start|>"))
            name = "chatml";
        else if (strstr(buf, "<|user|>"))
            name = "zephyr";
        else if (strstr(buf, "[INST]"))
            name = "llama2";
        snprintf(m->c.chat_template, sizeof m->c.chat_template, "%s", name);
    }
    // No template in the file (base models): a plain User:/Assistant: transcript, which base models continue
    // sensibly; the Gemma turn markers are for its instruction-tuned variants (--chat-template gemma).
    if (!m->c.chat_template[0]) snprintf(m->c.chat_template, sizeof m->c.chat_template, "dialogue");
}

static int load_gguf(struct model *m, const char *path, char *err, size_t errlen) {
    const char *bn = base_name(path);
    m->g = gguf_open(path, err, errlen);
    if (!m->g) return -1;
    const char *s;
    size_t n;
    if (gguf_get_str(m->g, "general.architecture", &s, &n)) {
        snprintf(err, errlen, "%s: metadata 'general.architecture' is missing", bn);
        return -1;
    }
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(n < 31 ? n : 31), s);
    struct model_config *c = &m->c;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", arch);
    if (strcmp(arch, "llama") == 0)
        c->arch = MODEL_ARCH_LLAMA;
    else if (strcmp(arch, "gemma3") == 0)
        c->arch = MODEL_ARCH_GEMMA3;
    else {
        snprintf(err, errlen, "%s: architecture '%s' is not supported (llama, gemma3)", bn, arch);
        return -1;
    }
    if (gguf_get_str(m->g, "general.name", &s, &n) == 0)
        snprintf(c->name, sizeof c->name, "%.*s", (int)(n < 127 ? n : 127), s);
    else
        snprintf(c->name, sizeof c->name, "%s", bn);
    uint32_t v;
    if (meta_u32(m->g, arch, "embedding_length", &v, 1, bn, err, errlen)) return -1;
    c->n_embd = (int)v;
    if (meta_u32(m->g, arch, "block_count", &v, 1, bn, err, errlen)) return -1;
    c->n_layer = (int)v;
    if (meta_u32(m->g, arch, "feed_forward_length", &v, 1, bn, err, errlen)) return -1;
    c->n_ff = (int)v;
    if (meta_u32(m->g, arch, "attention.head_count", &v, 1, bn, err, errlen)) return -1;
    c->n_head = (int)v;
    c->n_head_kv = c->n_head;
    int rc = meta_u32(m->g, arch, "attention.head_count_kv", &v, 0, bn, err, errlen);
    if (rc < 0) return -1;
    if (rc == 0) c->n_head_kv = (int)v;
    c->n_ctx_train = 2048;
    if (meta_u32(m->g, arch, "context_length", &v, 0, bn, err, errlen) == 0) c->n_ctx_train = (int)v;
    if (c->n_embd <= 0 || c->n_embd > 65536 || c->n_layer <= 0 || c->n_layer > MODEL_MAX_LAYERS || c->n_ff <= 0 ||
        c->n_ff > 1 << 20 || c->n_head <= 0 || c->n_head > 1024 || c->n_head_kv <= 0 || c->n_head % c->n_head_kv) {
        snprintf(err, errlen, "%s: implausible hyper-parameters (dim %d, layers %d, ffn %d, heads %d/%d)", bn, c->n_embd,
                 c->n_layer, c->n_ff, c->n_head, c->n_head_kv);
        return -1;
    }
    c->head_dim = c->n_embd / c->n_head;
    if (meta_u32(m->g, arch, "attention.key_length", &v, 0, bn, err, errlen) == 0) c->head_dim = (int)v;
    if (meta_u32(m->g, arch, "attention.value_length", &v, 0, bn, err, errlen) == 0 && (int)v != c->head_dim) {
        snprintf(err, errlen, "%s: key_length %d != value_length %u is not supported", bn, c->head_dim, v);
        return -1;
    }
    if (c->head_dim <= 0 || c->head_dim > 1024 || c->head_dim % 2) {
        snprintf(err, errlen, "%s: unsupported head dimension %d", bn, c->head_dim);
        return -1;
    }
    c->n_rot = c->head_dim;
    if (meta_u32(m->g, arch, "rope.dimension_count", &v, 0, bn, err, errlen) == 0) c->n_rot = (int)v;
    if (c->n_rot <= 0 || c->n_rot > c->head_dim || c->n_rot % 2) {
        snprintf(err, errlen, "%s: bad rope.dimension_count %d", bn, c->n_rot);
        return -1;
    }
    meta_f32(m->g, arch, "attention.layer_norm_rms_epsilon", &c->rms_eps, 1e-5f);
    meta_f32(m->g, arch, "rope.freq_base", &c->rope_base, 10000.0f);
    c->rope_scale = 1.0f;
    float factor = 1.0f;
    meta_f32(m->g, arch, "rope.scaling.factor", &factor, 1.0f);
    if (gguf_get_str(m->g, "llama.rope.scaling.type", &s, &n) == 0 || factor != 1.0f) {
        if (factor > 0.0f) c->rope_scale = 1.0f / factor;
    }
    c->rope_base_local = c->rope_base;
    c->rope_scale_local = c->rope_scale;
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    c->embd_scale = 1.0f;
    c->act = KN_ACT_SILU;
    c->rope_mode = KN_ROPE_NORM;
    memset(c->layer_swa, 0, sizeof c->layer_swa);
    if (c->arch == MODEL_ARCH_GEMMA3) {
        c->rope_mode = KN_ROPE_NEOX;
        c->act = KN_ACT_GELU_TANH;
        c->qk_norm = c->post_norms = 1;
        c->embd_scale = sqrtf((float)c->n_embd);
        c->rope_base_local = 10000.0f; // gemma3's local layers use base 10k (not stored in GGUF)
        c->rope_scale_local = 1.0f;
        meta_f32(m->g, arch, "rope.freq_base_swa", &c->rope_base_local, 10000.0f); // llama.cpp's key
        c->sliding_window = 512;
        if (meta_u32(m->g, arch, "attention.sliding_window", &v, 0, bn, err, errlen) == 0) c->sliding_window = (int)v;
        uint32_t pattern = 6; // every 6th layer is global
        if (meta_u32(m->g, arch, "attention.sliding_window_pattern", &v, 0, bn, err, errlen) == 0 && v > 0)
            pattern = v;
        for (int l = 0; l < c->n_layer; l++) c->layer_swa[l] = (uint32_t)(l + 1) % pattern != 0;
    }
    // tensors
    int64_t D = c->n_embd, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_head_kv * c->head_dim;
    const struct gguf_tensor_info *te = gguf_find_tensor(m->g, "token_embd.weight");
    if (!te) {
        snprintf(err, errlen, "%s: tensor 'token_embd.weight' is missing", bn);
        return -1;
    }
    c->n_vocab = (int)te->ne[1];
    if (te->n_dims != 2 || te->ne[1] <= 0 || te->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "%s: tensor 'token_embd.weight' has an implausible shape", bn);
        return -1;
    }
    if (bind(m, &m->tok_embd, "token_embd.weight", D, c->n_vocab, 1, bn, err, errlen)) return -1;
    c->weight_type = m->tok_embd.type;
    if (bind(m, &m->output_norm, "output_norm.weight", D, 1, 1, bn, err, errlen)) return -1;
    rc = bind(m, &m->output, "output.weight", D, c->n_vocab, 0, bn, err, errlen);
    if (rc < 0) return -1;
    if (rc == 1) {
        m->output = m->tok_embd;
        m->tied = 1;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int type_count[KN_TYPE_COUNT] = {0};
    for (int l = 0; l < c->n_layer; l++) {
        struct layer_w *w = &m->layers[l];
        char nm[96];
#define BIND(field, suffix, a, b)                                                                                     \
    do {                                                                                                              \
        snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, suffix);                                                       \
        if (bind(m, &w->field, nm, a, b, 1, bn, err, errlen)) return -1;                                              \
    } while (0)
        BIND(attn_norm, "attn_norm", D, 1);
        BIND(wq, "attn_q", D, Q);
        BIND(wk, "attn_k", D, KV);
        BIND(wv, "attn_v", D, KV);
        BIND(wo, "attn_output", Q, D);
        BIND(ffn_norm, "ffn_norm", D, 1);
        BIND(w_gate, "ffn_gate", D, c->n_ff);
        BIND(w_up, "ffn_up", D, c->n_ff);
        BIND(w_down, "ffn_down", c->n_ff, D);
        if (c->arch == MODEL_ARCH_GEMMA3) {
            BIND(q_norm, "attn_q_norm", c->head_dim, 1);
            BIND(k_norm, "attn_k_norm", c->head_dim, 1);
            BIND(post_attn_norm, "post_attention_norm", D, 1);
            BIND(post_ffw_norm, "post_ffw_norm", D, 1);
        }
#undef BIND
        type_count[w->wq.type]++;
        type_count[w->w_gate.type]++;
        type_count[w->w_down.type]++;
    }
    int best = 0;
    for (int t = 0; t < KN_TYPE_COUNT; t++)
        if (type_count[t] > type_count[best]) best = t;
    c->weight_type = best;
    detect_template(m);
    return 0;
}

// ---- llama2.c -----------------------------------------------------------------------------------

static int bind_f32(struct model *m, struct kn_tensor *t, const float *data, int64_t cols, int64_t rows,
                    char *err, size_t errlen) {
    t->type = KN_F32;
    t->n_cols = cols;
    t->n_rows = rows;
    t->nbytes = (size_t)(cols * rows) * 4;
    if (m->be->ops->tensor_load(m->be, t, data)) {
        snprintf(err, errlen, "cannot load weights on %s: %s", m->be->ops->name, m->be->ops->last_error(m->be));
        return -1;
    }
    m->weight_bytes += t->nbytes;
    return 0;
}

static int load_llama2c(struct model *m, const char *path, char *err, size_t errlen) {
    struct llama2c_file *f = &m->l2c;
    if (llama2c_open(path, f, err, errlen)) return -1;
    struct model_config *c = &m->c;
    c->arch = MODEL_ARCH_LLAMA;
    snprintf(c->arch_name, sizeof c->arch_name, "llama");
    snprintf(c->name, sizeof c->name, "%s", base_name(path));
    c->n_embd = f->dim;
    c->n_layer = f->n_layers;
    c->n_head = f->n_heads;
    c->n_head_kv = f->n_kv_heads;
    c->head_dim = f->dim / f->n_heads;
    c->n_ff = f->hidden_dim;
    c->n_vocab = f->vocab_size;
    c->n_ctx_train = f->seq_len;
    c->n_rot = c->head_dim;
    c->rope_mode = KN_ROPE_NORM;
    c->rope_base = c->rope_base_local = 10000.0f;
    c->rope_scale = c->rope_scale_local = 1.0f;
    c->rms_eps = 1e-5f;
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    c->embd_scale = 1.0f;
    c->act = KN_ACT_SILU;
    c->weight_type = KN_F32;
    if (c->n_layer > MODEL_MAX_LAYERS) {
        snprintf(err, errlen, "%s: too many layers (%d)", base_name(path), c->n_layer);
        return -1;
    }
    int64_t D = c->n_embd, H = c->n_ff, KV = (int64_t)c->n_head_kv * c->head_dim;
    if (bind_f32(m, &m->tok_embd, f->tok_embd, D, c->n_vocab, err, errlen)) return -1;
    if (bind_f32(m, &m->output_norm, f->rms_final, D, 1, err, errlen)) return -1;
    if (f->shared_classifier) {
        m->output = m->tok_embd;
        m->tied = 1;
    } else if (bind_f32(m, &m->output, f->wcls, D, c->n_vocab, err, errlen)) {
        return -1;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int l = 0; l < c->n_layer; l++) {
        struct layer_w *w = &m->layers[l];
        if (bind_f32(m, &w->attn_norm, f->rms_att + l * D, D, 1, err, errlen) ||
            bind_f32(m, &w->wq, f->wq + l * D * D, D, D, err, errlen) ||
            bind_f32(m, &w->wk, f->wk + l * KV * D, D, KV, err, errlen) ||
            bind_f32(m, &w->wv, f->wv + l * KV * D, D, KV, err, errlen) ||
            bind_f32(m, &w->wo, f->wo + l * D * D, D, D, err, errlen) ||
            bind_f32(m, &w->ffn_norm, f->rms_ffn + l * D, D, 1, err, errlen) ||
            bind_f32(m, &w->w_gate, f->w1 + l * H * D, D, H, err, errlen) ||
            bind_f32(m, &w->w_down, f->w2 + l * D * H, H, D, err, errlen) ||
            bind_f32(m, &w->w_up, f->w3 + l * H * D, D, H, err, errlen))
            return -1;
    }
    return 0;
}

// ---- common -------------------------------------------------------------------------------------

static void *scratch(struct model *m, size_t n_floats, int *fail) {
    void *p = m->be->ops->alloc(m->be, n_floats * sizeof(float), KN_MEM_SCRATCH);
    if (!p) *fail = 1;
    return p;
}

static int alloc_scratch(struct model *m, char *err, size_t errlen) {
    const struct model_config *c = &m->c;
    m->ubatch = 256;
    size_t ub = (size_t)m->ubatch;
    m->logit_rows = (int)((16u << 20) / (unsigned)c->n_vocab);
    if (m->logit_rows < 1) m->logit_rows = 1;
    if (m->logit_rows > m->ubatch) m->logit_rows = m->ubatch;
    size_t Q = (size_t)c->n_head * c->head_dim, KV = (size_t)c->n_head_kv * c->head_dim;
    size_t X = (size_t)c->n_embd > Q ? (size_t)c->n_embd : Q;
    int fail = 0;
    m->x = scratch(m, ub * c->n_embd, &fail);
    m->xb = scratch(m, ub * X, &fail);
    m->q = scratch(m, ub * Q, &fail);
    m->k = scratch(m, ub * KV, &fail);
    m->v = scratch(m, ub * KV, &fail);
    m->att = scratch(m, ub * Q, &fail);
    m->hb = scratch(m, ub * c->n_ff, &fail);
    m->hb2 = scratch(m, ub * c->n_ff, &fail);
    m->logits_dev = scratch(m, (size_t)m->logit_rows * c->n_vocab, &fail);
    if (fail) {
        snprintf(err, errlen, "out of %s memory for activations", m->be->ops->name);
        return -1;
    }
    return 0;
}

struct model *model_load(const char *path, struct kn_backend *be, char *err, size_t errlen) {
    unsigned char head[64];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    ssize_t nr = read(fd, head, sizeof head);
    close(fd);
    if (nr < 0) {
        snprintf(err, errlen, "%s: cannot read (%s)", path, strerror(errno));
        return NULL;
    }
    if (nr == 0) {
        snprintf(err, errlen, "%s: empty file", path);
        return NULL;
    }
    struct model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->be = be;
    int rc;
    if (nr >= 4 && memcmp(head, "GGUF", 4) == 0)
        rc = load_gguf(m, path, err, errlen);
    else if (llama2c_sniff(head, (size_t)nr))
        rc = load_llama2c(m, path, err, errlen);
    else {
        snprintf(err, errlen, "%s: not a GGUF file or llama2.c checkpoint (bad magic)", base_name(path));
        rc = -1;
    }
    if (rc == 0) rc = alloc_scratch(m, err, errlen);
    if (rc) {
        model_free(m);
        return NULL;
    }
    for (int l = 0; l < m->c.n_layer; l++) m->windows[l] = m->c.layer_swa[l] ? m->c.sliding_window : 0;
    return m;
}

static void unload(struct model *m, struct kn_tensor *t) {
    if (t->data || t->priv) m->be->ops->tensor_unload(m->be, t);
    memset(t, 0, sizeof *t);
}

void model_free(struct model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->c.n_layer; l++) {
            struct layer_w *w = &m->layers[l];
            struct kn_tensor *ts[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo, &w->ffn_norm, &w->w_gate,
                                      &w->w_up, &w->w_down, &w->q_norm, &w->k_norm, &w->post_attn_norm,
                                      &w->post_ffw_norm};
            for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) unload(m, ts[i]);
        }
    }
    if (!m->tied) unload(m, &m->output);
    unload(m, &m->tok_embd);
    unload(m, &m->output_norm);
    float *bufs[] = {m->x, m->xb, m->q, m->k, m->v, m->att, m->hb, m->hb2, m->logits_dev};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) m->be->ops->dealloc(m->be, bufs[i]);
    free(m->layers);
    gguf_close(m->g);
    llama2c_close(&m->l2c);
    free(m);
}

const struct model_config *model_get_config(const struct model *m) { return &m->c; }
const struct gguf *model_get_gguf(const struct model *m) { return m->g; }
uint64_t model_weight_bytes(const struct model *m) { return m->weight_bytes; }
const int *model_layer_windows(const struct model *m) { return m->windows; }
int model_ubatch(const struct model *m) { return m->ubatch; }

// One micro-batch through every layer; leaves the final hidden states in m->x.
static int forward_ubatch(struct model *m, struct kv_cache *kv, const int32_t *tok, const int32_t *pos,
                          const uint8_t *flags, int n, int phase, char *err, size_t errlen) {
    const struct model_config *c = &m->c;
    struct kn_backend *be = m->be;
    const struct kn_ops *o = be->ops;
    int D = c->n_embd, hd = c->head_dim;
    o->get_rows(be, m->x, &m->tok_embd, tok, n);
    if (c->embd_scale != 1.0f) o->scale(be, m->x, c->embd_scale, (size_t)n * D);
    if (kv_cache_reserve(kv, n, pos, flags, err, errlen)) return -1;
    for (int l = 0; l < c->n_layer; l++) {
        const struct layer_w *w = &m->layers[l];
        int swa = c->layer_swa[l];
        o->rmsnorm(be, m->xb, m->x, &w->attn_norm, n, D, c->rms_eps);
        o->matmul(be, m->q, &w->wq, m->xb, n);
        o->matmul(be, m->k, &w->wk, m->xb, n);
        o->matmul(be, m->v, &w->wv, m->xb, n);
        if (c->qk_norm) {
            o->rmsnorm(be, m->q, m->q, &w->q_norm, n * c->n_head, hd, c->rms_eps);
            o->rmsnorm(be, m->k, m->k, &w->k_norm, n * c->n_head_kv, hd, c->rms_eps);
        }
        float base = swa ? c->rope_base_local : c->rope_base;
        float fscale = swa ? c->rope_scale_local : c->rope_scale;
        o->rope(be, m->q, pos, n, c->n_head, hd, c->n_rot, base, fscale, c->rope_mode);
        o->rope(be, m->k, pos, n, c->n_head_kv, hd, c->n_rot, base, fscale, c->rope_mode);
        o->kv_store(be, kv_cache_slots(kv, l), m->k, m->v, pos, n, c->n_head_kv, hd);
        struct kn_attn_args a;
        memset(&a, 0, sizeof a);
        a.out = m->att;
        a.q = m->q;
        a.q_pos = pos;
        a.n_tok = n;
        a.n_head = c->n_head;
        a.scale = c->attn_scale;
        a.probs = kv_cache_probs(kv, l, &a.probs_stride);
        a.kv = kv_cache_view(kv, l);
        o->attention(be, &a);
        if (a.probs && kv_cache_observe(kv, l, pos)) {
            snprintf(err, errlen, "kv cache: cannot read attention probabilities");
            return -1;
        }
        o->matmul(be, m->xb, &w->wo, m->att, n);
        if (c->post_norms) o->rmsnorm(be, m->xb, m->xb, &w->post_attn_norm, n, D, c->rms_eps);
        o->add(be, m->x, m->xb, (size_t)n * D);
        o->rmsnorm(be, m->xb, m->x, &w->ffn_norm, n, D, c->rms_eps);
        o->matmul(be, m->hb, &w->w_gate, m->xb, n);
        o->matmul(be, m->hb2, &w->w_up, m->xb, n);
        o->glu(be, m->hb, m->hb, m->hb2, (size_t)n * c->n_ff, c->act);
        o->matmul(be, m->xb, &w->w_down, m->hb, n);
        if (c->post_norms) o->rmsnorm(be, m->xb, m->xb, &w->post_ffw_norm, n, D, c->rms_eps);
        o->add(be, m->x, m->xb, (size_t)n * D);
    }
    if (kv_cache_commit(kv, phase)) {
        snprintf(err, errlen, "kv cache: %s", o->last_error(be));
        return -1;
    }
    return 0;
}

// Logits of rows [r0, r0 + n) of m->x into host memory out (n, n_vocab).
static int logits_rows(struct model *m, int r0, int n, float *out) {
    const struct model_config *c = &m->c;
    struct kn_backend *be = m->be;
    size_t D = (size_t)c->n_embd;
    for (int i = 0; i < n; i += m->logit_rows) {
        int k = n - i < m->logit_rows ? n - i : m->logit_rows;
        be->ops->rmsnorm(be, m->xb, m->x + (size_t)(r0 + i) * D, &m->output_norm, k, (int)D, c->rms_eps);
        be->ops->matmul(be, m->logits_dev, &m->output, m->xb, k);
        if (be->ops->download(be, out + (size_t)i * c->n_vocab, m->logits_dev, (size_t)k * c->n_vocab * sizeof(float)))
            return -1;
    }
    return 0;
}

int model_forward(struct model *m, struct kv_cache *kv, const struct model_batch *b, float *logits, char *err,
                  size_t errlen) {
    if (b->n <= 0) {
        snprintf(err, errlen, "empty batch");
        return -1;
    }
    for (int i = 0; i < b->n; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= m->c.n_vocab) {
            snprintf(err, errlen, "token id %d out of range (vocab %d)", b->tokens[i], m->c.n_vocab);
            return -1;
        }
    if (b->pos[b->n - 1] >= kv_cache_get_params(kv)->n_ctx) {
        snprintf(err, errlen, "context is full (%d tokens)", kv_cache_get_params(kv)->n_ctx);
        return -1;
    }
    if (b->phase == KV_PHASE_PROMPT_END) kv_cache_begin_prompt(kv, b->pos[b->n - 1] + 1);
    for (int i0 = 0; i0 < b->n; i0 += m->ubatch) {
        int n = b->n - i0 < m->ubatch ? b->n - i0 : m->ubatch;
        int last = i0 + n == b->n;
        int phase = last ? b->phase : KV_PHASE_PROMPT_CHUNK;
        if (forward_ubatch(m, kv, b->tokens + i0, b->pos + i0, b->flags ? b->flags + i0 : NULL, n, phase, err,
                           errlen))
            return -1;
        if (!logits) continue;
        int rc = 0;
        if (b->logits_all)
            rc = logits_rows(m, 0, n, logits + (size_t)i0 * m->c.n_vocab);
        else if (last)
            rc = logits_rows(m, n - 1, 1, logits);
        if (rc) {
            snprintf(err, errlen, "cannot read logits: %s", m->be->ops->last_error(m->be));
            return -1;
        }
    }
    return 0;
}
