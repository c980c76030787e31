// model/synth.c — random-weight llama / gemma3 GGUF generator with a synthetic SentencePiece-style vocabulary.
#include "model/synth.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kn_types.h"
#include "model/gguf.h"

#define SP_SPACE "\xe2\x96\x81" // U+2581, SentencePiece's word-boundary marker

int synth_preset(struct synth_spec *s, const char *preset) {
    memset(s, 0, sizeof *s);
    s->wtype = KN_Q8_0;
    s->seed = 1;
    s->rms_eps = 1e-5f;
    s->rope_freq_base = 10000.0f;
    s->add_space_prefix = 1;
    strcpy(s->arch, "llama");
    if (!preset) return -1;
    if (!strcmp(preset, "tinyllama")) {
        strcpy(s->name, "synthetic TinyLlama-1.1B");
        s->n_embd = 2048, s->n_layer = 22, s->n_head = 32, s->n_head_kv = 4, s->n_ff = 5632;
        s->n_vocab = 32000, s->n_ctx = 2048;
    } else if (!strcmp(preset, "llama7b")) {
        strcpy(s->name, "synthetic Llama-2-7B");
        s->n_embd = 4096, s->n_layer = 32, s->n_head = 32, s->n_head_kv = 32, s->n_ff = 11008;
        s->n_vocab = 32000, s->n_ctx = 4096;
    } else if (!strcmp(preset, "gemma3-270m")) {
        strcpy(s->arch, "gemma3");
        strcpy(s->name, "synthetic Gemma-3-270M");
        s->n_embd = 640, s->n_layer = 18, s->n_head = 4, s->n_head_kv = 1, s->head_dim = 256, s->n_ff = 2048;
        s->n_vocab = 262144, s->n_ctx = 32768, s->sliding_window = 512;
        s->rms_eps = 1e-6f, s->rope_freq_base = 1000000.0f, s->add_space_prefix = 0;
    } else if (!strcmp(preset, "tiny")) {
        strcpy(s->name, "synthetic tiny llama");
        s->n_embd = 256, s->n_layer = 2, s->n_head = 4, s->n_head_kv = 2, s->n_ff = 512;
        s->n_vocab = 1024, s->n_ctx = 512;
    } else if (!strcmp(preset, "tiny-gemma3")) {
        strcpy(s->arch, "gemma3");
        strcpy(s->name, "synthetic tiny gemma3");
        s->n_embd = 256, s->n_layer = 6, s->n_head = 4, s->n_head_kv = 1, s->head_dim = 64, s->n_ff = 512;
        s->n_vocab = 1024, s->n_ctx = 1024, s->sliding_window = 64;
        s->rms_eps = 1e-6f, s->rope_freq_base = 1000000.0f, s->add_space_prefix = 0;
    } else {
        return -1;
    }
    return 0;
}

// llama.cpp's "use more bits" layer pattern for Q4_K_M / Q5_K_M: the first and last eighth of the layers
// and every third layer in between.
static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

int synth_tensor_type(const struct synth_spec *s, const char *name, int n_dims, int64_t ne0) {
    if (n_dims < 2) return KN_F32;
    int t = s->wtype;
    if (s->q4_k_m) {
        bool tied = !strcmp(s->arch, "gemma3");
        int il;
        char rest[64];
        t = KN_Q4_K;
        if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) {
            t = KN_Q6_K;
        } else if (sscanf(name, "blk.%d.%63s", &il, rest) == 2 &&
                   (!strcmp(rest, "attn_v.weight") || !strcmp(rest, "ffn_down.weight")) && more_bits(il, s->n_layer)) {
            t = KN_Q6_K;
        }
    }
    int bs = kn_type_block_size(t);
    if (bs && ne0 % bs == 0) return t;
    switch (t) {
    case KN_Q4_K: t = KN_Q5_0; break;
    case KN_Q5_K: t = KN_Q5_1; break;
    case KN_Q6_K: t = KN_Q8_0; break;
    default: t = KN_F16; break;
    }
    return ne0 % kn_type_block_size(t) == 0 ? t : KN_F16;
}

// llama.cpp's general.file_type for the weight type (Q4_K / Q5_K alone count as the _S variants).
static int file_type(const struct synth_spec *s) {
    if (s->q4_k_m) return 15;
    switch (s->wtype) {
    case KN_F32: return 0;
    case KN_F16: return 1;
    case KN_Q4_0: return 2;
    case KN_Q4_1: return 3;
    case KN_Q8_0: return 7;
    case KN_Q5_0: return 8;
    case KN_Q5_1: return 9;
    case KN_Q4_K: return 14;
    case KN_Q5_K: return 16;
    case KN_Q6_K: return 18;
    case KN_BF16: return 32;
    default: return 0;
    }
}

// ---- vocabulary --------------------------------------------------------------------------------------------

struct vocab {
    char *arena;
    size_t len, cap;
    size_t *off; // piece i starts at arena + off[i]
    float *scores;
    int32_t *types;
    int n, max;
    int32_t *set; // open addressing over piece indices + 1, to keep pieces unique
    size_t set_cap;
};

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

// Appends a piece unless it is already present or the vocabulary is full. -1 on allocation failure.
static int v_add(struct vocab *v, const char *p, float score, int type) {
    if (v->n >= v->max) return 0;
    size_t n = strlen(p);
    size_t h = (size_t)fnv(p, n) & (v->set_cap - 1);
    while (v->set[h]) {
        if (!strcmp(v->arena + v->off[v->set[h] - 1], p)) return 0;
        h = (h + 1) & (v->set_cap - 1);
    }
    if (v->len + n + 1 > v->cap) {
        size_t c = v->cap ? v->cap : 1 << 16;
        while (c < v->len + n + 1) c *= 2;
        char *a = realloc(v->arena, c);
        if (!a) return -1;
        v->arena = a;
        v->cap = c;
    }
    memcpy(v->arena + v->len, p, n + 1);
    v->off[v->n] = v->len;
    v->len += n + 1;
    v->scores[v->n] = score;
    v->types[v->n] = type;
    v->set[h] = v->n + 1;
    v->n++;
    return 0;
}

static void v_free(struct vocab *v) {
    free(v->arena);
    free(v->off);
    free(v->scores);
    free(v->types);
    free(v->set);
}

static const char *const common_words[] = {
    "the", "and", "of", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with",
    "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but",
    "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how",
    "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then",
    "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two",
    "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people",
    "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now",
    "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back",
    "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under",
    "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line",
    "Once", "upon", "there", "story", "cat", "dog", "happy", "play", "friend", "Hello", "world", "model",
};

// Specials, the 256 byte pieces, then "▁", common words, single characters (bare and after ▁), and all
// lowercase strings of length 2, 3, ... (each after ▁, then bare) until n_vocab pieces exist.
static int vocab_build(struct vocab *v, int n_vocab) {
    memset(v, 0, sizeof *v);
    v->max = n_vocab;
    v->set_cap = 16;
    while (v->set_cap < (size_t)n_vocab * 2) v->set_cap <<= 1;
    v->off = malloc((size_t)n_vocab * sizeof *v->off);
    v->scores = malloc((size_t)n_vocab * sizeof *v->scores);
    v->types = malloc((size_t)n_vocab * sizeof *v->types);
    v->set = calloc(v->set_cap, sizeof *v->set);
    if (!v->off || !v->scores || !v->types || !v->set) return -1;
    char buf[64];
    int rc = v_add(v, "<unk>", 0.0f, 2);
    rc = rc ? rc : v_add(v, "<s>", 0.0f, 3);
    rc = rc ? rc : v_add(v, "</s>", 0.0f, 3);
    for (int b = 0; b < 256 && !rc; b++) {
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        rc = v_add(v, buf, 0.0f, 6);
    }
    int first = v->n; // normal pieces score -(index among them): earlier = preferred
#define NORMAL(p) (rc = rc ? rc : v_add(v, (p), (float)-(v->n - first), 1))
    NORMAL(SP_SPACE);
    for (size_t i = 0; i < sizeof common_words / sizeof common_words[0]; i++) {
        snprintf(buf, sizeof buf, SP_SPACE "%s", common_words[i]);
        NORMAL(buf);
    }
    const char *chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?;:'\"-()[]{}<>/\\@#$%^&*_+=~`|";
    for (const char *c = chars; *c; c++) {
        snprintf(buf, sizeof buf, "%c", *c);
        NORMAL(buf);
        snprintf(buf, sizeof buf, SP_SPACE "%c", *c);
        NORMAL(buf);
    }
    for (int len = 2; len <= 8 && v->n < n_vocab && !rc; len++) {
        long count = 1;
        for (int k = 0; k < len; k++) count *= 26;
        for (long idx = 0; idx < count && v->n < n_vocab && !rc; idx++) {
            char word[16];
            long x = idx;
            for (int k = len - 1; k >= 0; k--, x /= 26) word[k] = (char)('a' + x % 26);
            word[len] = 0;
            snprintf(buf, sizeof buf, SP_SPACE "%s", word);
            NORMAL(buf);
            NORMAL(word);
        }
    }
#undef NORMAL
    return rc;
}

// ---- weights ------------------------------------------------------------------------------------------------

struct fill_ctx {
    uint64_t key; // from seed and tensor name
    int64_t n;    // values per row
    float mean, std;
};

static inline uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Row `row` of a tensor: mean + std * z, z the (unit-variance) sum of four 16-bit uniforms.
static void fill_row(void *ctx, int64_t row, float *dst) {
    const struct fill_ctx *c = ctx;
    uint64_t st = c->key ^ ((uint64_t)row * 0xd1342543de82ef95ull);
    splitmix(&st);
    const float k = 1.7320508f / 65536.0f; // sqrt(3) / 2^16: four uniforms have variance 4/12
    for (int64_t i = 0; i < c->n; i++) {
        uint64_t r = splitmix(&st);
        float sum = (float)((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
        dst[i] = c->mean + c->std * (sum - 131070.0f) * k;
    }
}

struct tensor_list {
    struct fill_ctx *ctx;
    int n, max;
    int rc;
    char err[160];
};

static void add_tensor(struct gguf_writer *w, struct tensor_list *tl, const struct synth_spec *s, const char *name,
                       int n_dims, int64_t ne0, int64_t ne1, bool norm) {
    if (tl->rc) return;
    if (tl->n >= tl->max) {
        tl->rc = -1;
        snprintf(tl->err, sizeof tl->err, "too many tensors");
        return;
    }
    struct fill_ctx *c = &tl->ctx[tl->n++];
    c->key = fnv(name, strlen(name)) ^ (s->seed * 0x9e3779b97f4a7c15ull);
    c->n = ne0;
    c->mean = norm ? 1.0f : 0.0f;
    c->std = norm ? 0.05f : (s->w_std > 0 ? s->w_std : 0.02f);
    int64_t ne[2] = {ne0, ne1};
    int type = synth_tensor_type(s, name, n_dims, ne0);
    if (gguf_w_tensor_gen(w, name, type, n_dims, ne, fill_row, c) != 0) {
        tl->rc = -1;
        snprintf(tl->err, sizeof tl->err, "cannot add tensor '%s' (%s, %lld x %lld)", name, kn_type_name(type),
                 (long long)ne0, (long long)ne1);
    }
}

static int check_spec(const struct synth_spec *s, char *err, size_t errlen) {
    const char *why = NULL;
    if (strcmp(s->arch, "llama") && strcmp(s->arch, "gemma3")) why = "arch must be llama or gemma3";
    else if (s->n_embd < 1 || s->n_layer < 1 || s->n_head < 1 || s->n_head_kv < 1 || s->n_ff < 1 || s->n_ctx < 1)
        why = "sizes must be positive";
    else if (s->n_head % s->n_head_kv) why = "n_head_kv must divide n_head";
    else if (s->head_dim < 0 || (!s->head_dim && s->n_embd % s->n_head)) why = "n_head must divide n_embd (or set head_dim)";
    else if (s->n_vocab < 512) why = "n_vocab must be at least 512";
    else if (s->n_layer > 4096 || s->n_embd > (1 << 20) || s->n_ff > (1 << 22) || s->n_vocab > (1 << 24))
        why = "sizes too large";
    else if (!s->q4_k_m && !kn_type_block_bytes(s->wtype)) why = "unsupported weight type";
    if (!why) return 0;
    if (err && errlen) snprintf(err, errlen, "synth: %s", why);
    return -1;
}

int synth_write_gguf(const struct synth_spec *s, const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (check_spec(s, err, errlen)) return -1;
    const char *a = s->arch;
    bool gemma = !strcmp(a, "gemma3");
    int hd = s->head_dim ? s->head_dim : s->n_embd / s->n_head;
    struct gguf_writer *w = gguf_writer_init();
    struct vocab v;
    struct tensor_list tl = {0};
    const char **pieces = NULL;
    int rc = -1;
    if (!w || vocab_build(&v, s->n_vocab) || v.n != s->n_vocab) {
        if (err && errlen) snprintf(err, errlen, "synth: out of memory building the vocabulary");
        if (w) v_free(&v);
        goto done;
    }
    char key[128], name[128];
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    gguf_w_str(w, "general.architecture", a);
    gguf_w_str(w, "general.name", s->name[0] ? s->name : (gemma ? "synthetic gemma3" : "synthetic llama"));
    gguf_w_u32(w, "general.file_type", (uint32_t)file_type(s));
    gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, KEY("context_length"), (uint32_t)s->n_ctx);
    gguf_w_u32(w, KEY("embedding_length"), (uint32_t)s->n_embd);
    gguf_w_u32(w, KEY("block_count"), (uint32_t)s->n_layer);
    gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff);
    gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)s->n_head);
    gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_head_kv);
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->rms_eps);
    gguf_w_f32(w, KEY("rope.freq_base"), s->rope_freq_base);
    if (gemma && s->rope_freq_base_swa > 0) gguf_w_f32(w, KEY("rope.freq_base_swa"), s->rope_freq_base_swa);
    gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)hd);
    gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)hd);
    if (gemma) {
        gguf_w_u32(w, KEY("attention.sliding_window"), (uint32_t)s->sliding_window);
    } else {
        gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)hd);
        gguf_w_u32(w, KEY("vocab_size"), (uint32_t)s->n_vocab);
    }
#undef KEY
    pieces = malloc((size_t)v.n * sizeof *pieces);
    if (!pieces) {
        v_free(&v);
        if (err && errlen) snprintf(err, errlen, "synth: out of memory");
        goto done;
    }
    for (int i = 0; i < v.n; i++) pieces[i] = v.arena + v.off[i];
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_str(w, "tokenizer.ggml.pre", "default");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", pieces, (uint64_t)v.n);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", v.scores, (uint64_t)v.n);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", v.types, (uint64_t)v.n);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", s->add_space_prefix);
    free(pieces); // the writer keeps its own serialised copy
    v_free(&v);

    tl.max = 3 + 15 * s->n_layer;
    tl.ctx = calloc((size_t)tl.max, sizeof *tl.ctx);
    if (!tl.ctx) {
        if (err && errlen) snprintf(err, errlen, "synth: out of memory");
        goto done;
    }
    int64_t E = s->n_embd, F = s->n_ff, Q = (int64_t)s->n_head * hd, K = (int64_t)s->n_head_kv * hd;
    add_tensor(w, &tl, s, "token_embd.weight", 2, E, s->n_vocab, false);
    if (!gemma) add_tensor(w, &tl, s, "output.weight", 2, E, s->n_vocab, false);
    add_tensor(w, &tl, s, "output_norm.weight", 1, E, 1, true);
    for (int il = 0; il < s->n_layer; il++) {
#define T(suffix, nd, a0, a1, norm) \
    (snprintf(name, sizeof name, "blk.%d.%s.weight", il, suffix), add_tensor(w, &tl, s, name, nd, a0, a1, norm))
        T("attn_norm", 1, E, 1, true);
        T("attn_q", 2, E, Q, false);
        T("attn_k", 2, E, K, false);
        T("attn_v", 2, E, K, false);
        T("attn_output", 2, Q, E, false);
        if (gemma) {
            T("attn_q_norm", 1, hd, 1, true);
            T("attn_k_norm", 1, hd, 1, true);
            T("post_attention_norm", 1, E, 1, true);
            T("post_ffw_norm", 1, E, 1, true);
        }
        T("ffn_norm", 1, E, 1, true);
        T("ffn_gate", 2, E, F, false);
        T("ffn_up", 2, E, F, false);
        T("ffn_down", 2, F, E, false);
#undef T
    }
    if (tl.rc) {
        if (err && errlen) snprintf(err, errlen, "synth: %s", tl.err);
        goto done;
    }
    rc = gguf_writer_save(w, path, err, errlen);
done:
    gguf_writer_free(w);
    free(tl.ctx);
    return rc;
}
