// tests/test_model_gemma.c — the default model (Gemma 3 270M base, Q4_K_M): greedy answers to fixed prompts
// match recorded token ids (make test-model).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/engine.h"
#include "app/params.h"
#include "kvcache/kv_cache.h"
#include "model/model.h"
#include "tests/test.h"
#include "tokenizer/tok.h"

#define MODEL_PATH "assets/models/gemma-3-270m-q4_k_m.gguf"
#define END_OF_TURN 106

// Golden greedy continuations, recorded with this test's own loop (AVX2 and scalar kernels agree) after
// reading them. Lengths stop before any step whose top-2 logit gap is under 0.05, so kernel changes at the
// 1e-3 level cannot flip them. The first generated token of each prompt and the top-10 logits of the prompts
// (and of the chat prompt plus its first 7 generated tokens) were cross-checked with the numpy reference
// tests/tools/ref_forward.py (within 3e-3).
// This GGUF is the BASE Gemma 3 270M: raw completions are fluent, but on a chat turn it echoes the question,
// then emits " mendatang" (217716) where <end_of_turn> (106) belongs and starts over; recorded as is.
struct golden {
    const char *prompt;
    int chat;  // wrap as a Gemma user turn
    int tie;   // fp32's top 3 first tokens lie within 0.07: int8 activations (about ±0.1) may pick another
    int n_gen; // tokens to generate (a chat reply would stop earlier, at <end_of_turn>)
    int n_ids;
    int32_t ids[48];
};

static const struct golden cases[] = {
    // " the capital of the country of France. It is the"
    {"The capital of France is", 0, 0, 11, 11, {506, 5279, 529, 506, 2891, 529, 7001, 236761, 1030, 563, 506}},
    // " little girl named Lily. She was a very smart girl, and she loved to"
    {"Once upon a time, there was a",
     0,
     1,
     16,
     16,
     {2268, 3953, 7489, 60708, 236761, 2625, 691, 496, 1401, 6538, 3953, 236764, 532, 1304, 9312, 531}},
    // "What is the capital of France? mendatang\nWhat is the capital of France? mendatang\nWhat is the
    // capital
    // of France"
    {"What is the capital of France?", 1, 0, 24, 24, {3689,   563,  506,  5279, 529,  7001, 236881, 217716,
                                                   107,    3689, 563,  506,  5279, 529,  7001,   236881,
                                                   217716, 107,  3689, 563,  506,  5279, 529,    7001}},
};

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
    return kv_cache_init(be, &p, err, sizeof err);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// Greedy ids after BOS + prompt (templated when chat), stopping at EOS / <end_of_turn>; returns the count.
// first (when not NULL) receives the logits at the end of the prompt.
static int greedy(struct kn_backend *be, struct model *m, const struct tok *t, const struct golden *g,
                  int32_t *out, float *first) {
    char text[512];
    if (g->chat)
        snprintf(text, sizeof text, "<start_of_turn>user\n%s<end_of_turn>\n<start_of_turn>model\n",
                 g->prompt);
    else
        snprintf(text, sizeof text, "%s", g->prompt);
    int32_t ids[256];
    ids[0] = tok_bos(t);
    int n = tok_encode_special(t, text, ids + 1, 255);
    if (n < 0 || n > 200) return -1;
    n += 1;
    int V = model_get_config(m)->n_vocab;
    float *lg = malloc((size_t)V * sizeof *lg);
    struct kv_cache *kv = kv_new(be, m, n + g->n_gen + 1);
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    for (int i = 0; i < n; i++)
        pos[i] = i;
    char err[256];
    struct model_batch b = {.tokens = ids, .pos = pos, .n = n, .phase = KV_PHASE_PROMPT_END};
    int k = 0;
    if (lg && kv && model_forward(m, kv, &b, lg, err, sizeof err) == 0) {
        if (first) memcpy(first, lg, (size_t)V * sizeof *lg);
        for (; k < g->n_gen; k++) {
            int32_t id = argmax(lg, V), p = n + k;
            out[k] = id;
            if (id == tok_eos(t) || id == END_OF_TURN) {
                k++;
                break;
            }
            struct model_batch d = {.tokens = &id, .pos = &p, .n = 1, .phase = KV_PHASE_DECODE};
            if (model_forward(m, kv, &d, lg, err, sizeof err)) break;
        }
    }
    kv_cache_free(kv);
    free(pos);
    free(lg);
    return k;
}

static void print_ids(const char *what, const int32_t *ids, int n, const struct tok *t) {
    printf("%s: {", what);
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("}\n  \"");
    int prev = -1;
    for (int i = 0; i < n; i++) {
        char piece[128];
        tok_decode_piece(t, prev, ids[i], piece, sizeof piece);
        for (char *c = piece; *c; c++)
            fputs(*c == '\n' ? "\\n" : (char[]){*c, 0}, stdout);
        prev = ids[i];
    }
    printf("\"\n");
}

struct sink {
    char buf[4096];
    size_t n;
};
static int collect(void *ud, const char *s, size_t len) {
    struct sink *k = ud;
    if (k->n + len < sizeof k->buf) {
        memcpy(k->buf + k->n, s, len);
        k->n += len;
        k->buf[k->n] = 0;
    }
    return 0;
}

// The text the engine should stream for ids (stop tokens excluded).
static void decode_ids(const struct tok *t, const int32_t *ids, int n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    int prev = -1;
    for (int i = 0; i < n; i++) {
        if (ids[i] == END_OF_TURN || ids[i] == tok_eos(t)) break;
        char piece[128];
        int k = tok_decode_piece(t, prev, ids[i], piece, sizeof piece);
        if (len + (size_t)k + 1 < cap) {
            memcpy(out + len, piece, (size_t)k);
            len += (size_t)k;
            out[len] = 0;
        }
        prev = ids[i];
    }
}

static void test_engine(const int32_t got[][48], const int *n_got, const struct tok *t) {
    struct app_params p;
    app_params_default(&p);
    p.chat_template = "gemma"; // the golden chat ids were recorded with Gemma's turn markers
    p.kv_policy = KV_POLICY_FULL; // and with the full cache (greedy() above)
    p.model_path = MODEL_PATH;
    p.temp = 0.0f;
    p.repeat_penalty = 1.0f;
    p.n_ctx = 256;
    p.n_threads = 2;
    p.device = APP_DEVICE_CPU;
    p.int8_matmul = 0; // --exact-matmul: the fp32 greedy ids above (int8 is checked separately)
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        p.n_predict = cases[i].n_gen;
        struct engine *e = engine_init(&p, err, sizeof err);
        CHECK_MSG(e != NULL, "engine_init: %s", err);
        if (!e) return;
        struct sink s = {{0}, 0};
        int why = cases[i].chat ? engine_chat_turn(e, cases[i].prompt, collect, &s, NULL)
                                : engine_complete(e, cases[i].prompt, collect, &s, NULL);
        char want[4096];
        decode_ids(t, got[i], n_got[i], want, sizeof want);
        CHECK_MSG(strcmp(s.buf, want) == 0, "engine %s '%s': '%s' vs greedy '%s'",
                  cases[i].chat ? "chat" : "complete", cases[i].prompt, s.buf, want);
        int ended = n_got[i] > 0 && got[i][n_got[i] - 1] == END_OF_TURN;
        CHECK_EQ_INT(why, ended ? ENGINE_STOP_EOS : ENGINE_STOP_LIMIT);
        engine_free(e);
    }
}

// The default template for this base model (no template in its metadata) is the plain dialogue: each reply
// ends at the model's first newline (ENGINE_STOP_EOS) and the context carries the conversation on.
static void test_dialogue(void) {
    static const struct {
        const char *user, *reply;
    } turns[] = {
        {"Why is the sky blue?", " The sky blue is because the sun is the only source of light in the sky."},
        {"What is the largest planet?", " The largest planet is Earth."},
    };
    struct app_params p;
    app_params_default(&p);
    p.model_path = MODEL_PATH;
    p.temp = 0.0f;
    p.n_ctx = 512;
    p.n_predict = 64;
    p.device = APP_DEVICE_CPU;
    char err[512];
    struct engine *e = engine_init(&p, err, sizeof err);
    CHECK_MSG(e != NULL, "engine_init: %s", err);
    if (!e) return;
    char opts[1024];
    engine_describe_options(e, opts, sizeof opts);
    CHECK_MSG(strstr(opts, "chat_template = dialogue") != NULL, "default template: %s", opts);
    for (size_t i = 0; i < sizeof turns / sizeof *turns; i++) {
        struct sink s = {{0}, 0};
        int why = engine_chat_turn(e, turns[i].user, collect, &s, NULL);
        CHECK_EQ_INT(why, ENGINE_STOP_EOS);
        CHECK_MSG(strcmp(s.buf, turns[i].reply) == 0, "dialogue '%s': '%s'", turns[i].user, s.buf);
    }
    engine_free(e);
}

int main(void) {
    const char *env = getenv("KVCHAT_TEST_MODEL");
    if (!env || strcmp(env, "1") != 0 || access(MODEL_PATH, R_OK) != 0) {
        TEST_SKIP("Gemma 3 270M: set KVCHAT_TEST_MODEL=1 (make test-model) with %s present", MODEL_PATH);
        return test_done();
    }
    char err[512];
    struct kn_backend *be = kn_cpu_init(2, err, sizeof err);
    struct model *m = be ? model_load(MODEL_PATH, be, err, sizeof err) : NULL;
    struct tok *t = m ? tok_load_gguf(model_get_gguf(m), err, sizeof err) : NULL;
    CHECK_MSG(t != NULL, "%s", err);
    if (t) {
        const struct model_config *c = model_get_config(m);
        CHECK(c->arch == MODEL_ARCH_GEMMA3 && c->n_layer == 18 && c->n_head == 4 && c->n_head_kv == 1 &&
              c->head_dim == 256 && c->sliding_window == 512 && c->n_vocab == 262144);
        CHECK_EQ_INT(tok_piece_to_id(t, "<end_of_turn>"), END_OF_TURN);
        int32_t got[3][48];
        int n_got[3];
        const int V = c->n_vocab;
        float *lf = malloc(sizeof(float) * (size_t)V * 3), *l8 = malloc(sizeof(float) * (size_t)V);
        CHECK(lf && l8);
        for (size_t i = 0; i < sizeof cases / sizeof *cases && lf; i++) {
            const struct golden *g = &cases[i];
            n_got[i] = greedy(be, m, t, g, got[i], lf + (size_t)i * V);
            print_ids(g->prompt, got[i], n_got[i], t);
            CHECK_MSG(n_got[i] == g->n_ids && memcmp(got[i], g->ids, (size_t)g->n_ids * sizeof(int32_t)) == 0,
                      "'%s': greedy ids differ from the recorded ones", g->prompt);
        }
        // The app's default, int8 activations (per 32 values) in every matmul, moves the prompt's logits by about
        // 0.1-0.3 on average (0.09, 0.10, 0.30 measured on these prompts; a wrong kernel moves them by units). Its
        // greedy ids equal the recorded ones except where fp32 itself is a near tie; there its first token must
        // be within 0.1 of fp32's best.
        kn_cpu_set_int8_act(be, 1);
        for (size_t i = 0; i < sizeof cases / sizeof *cases && lf && l8; i++) {
            const struct golden *g = &cases[i];
            const float *f = lf + (size_t)i * V;
            int32_t ids8[48];
            int n8 = greedy(be, m, t, g, ids8, l8);
            double mad = 0.0;
            for (int v = 0; v < V; v++) mad += fabs((double)l8[v] - (double)f[v]);
            mad /= V;
            int a8 = argmax(l8, V), af = argmax(f, V);
            printf("'%s' int8: mean |logit diff| %.4f, first token %d (fp32 %d, %.4f below it)\n", g->prompt, mad,
                   a8, af, f[af] - f[a8]);
            CHECK_MSG(mad <= 0.5, "'%s': int8 activations move the logits by %.3f on average", g->prompt, mad);
            CHECK_MSG(f[a8] >= f[af] - 0.1f, "'%s': int8's first token is %.3f below fp32's best", g->prompt,
                      f[af] - f[a8]);
            if (g->tie) continue;
            if (n8 != g->n_ids || memcmp(ids8, g->ids, (size_t)g->n_ids * sizeof(int32_t)) != 0)
                print_ids("int8 activations", ids8, n8, t);
            CHECK_MSG(n8 == g->n_ids && memcmp(ids8, g->ids, (size_t)g->n_ids * sizeof(int32_t)) == 0,
                      "'%s': greedy ids with int8 activations differ from the recorded ones", g->prompt);
        }
        free(lf);
        free(l8);
        kn_cpu_set_int8_act(be, 0);
        test_engine((const int32_t(*)[48])got, n_got, t);
        test_dialogue();
    }
    tok_free(t);
    model_free(m);
    kn_free(be);
    return test_done();
}
