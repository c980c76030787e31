// tests/test_kv_cache.c — the KV cache's memory is real: the block pool (reuse, chunks returned to the
// backend), blocks freed by eviction and reused by new tokens, kv_bytes recounted, fastgen vs full over a
// long generation on a random-weight model, and argument/state checks of the public API.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kn.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_internal.h"
#include "kvcache/kv_layout.h"
#include "kvcache/kv_pool.h"
#include "model/model.h"
#include "model/synth.h"
#include "tests/test.h"

static uint64_t kv_mem(struct kn_backend *be) {
    struct kn_mem m;
    be->ops->mem_info(be, &m);
    return m.ours[KN_MEM_KV];
}

// ---- the pool on its own ----------------------------------------------------------------------------

static void test_pool(struct kn_backend *be) {
    uint64_t base = kv_mem(be);
    struct kv_pool p;
    kv_pool_init(&p, be, 1000);
    void *b[256];
    for (int i = 0; i < 256; i++)
        b[i] = kv_pool_get(&p);
    CHECK_EQ_INT(p.n_used, 256);
    CHECK_EQ_INT(p.n_chunks, 4);
    CHECK_EQ_INT(kv_pool_reserved_bytes(&p), 4 * KV_POOL_CHUNK * 1000);
    CHECK_EQ_INT(kv_mem(be) - base, kv_pool_reserved_bytes(&p));
    int distinct = 1;
    for (int i = 0; i < 256 && distinct; i++)
        for (int j = i + 1; j < 256; j++)
            if (b[i] == NULL || ((char *)b[i] + 1000 > (char *)b[j] && (char *)b[j] + 1000 > (char *)b[i])) {
                distinct = 0;
                break;
            }
    CHECK_MSG(distinct, "pool blocks overlap");
    // a returned block is the next one handed out; nothing new is allocated
    kv_pool_put(&p, b[100]);
    CHECK_EQ_INT(p.n_used, 255);
    void *again = kv_pool_get(&p);
    CHECK(again == b[100]);
    b[100] = again;
    CHECK_EQ_INT(kv_pool_reserved_bytes(&p), 4 * KV_POOL_CHUNK * 1000);
    // emptying one chunk keeps it as the spare; emptying a second returns one to the backend
    for (int i = 64; i < 128; i++)
        kv_pool_put(&p, b[i]);
    CHECK_EQ_INT(p.n_chunks, 4);
    for (int i = 128; i < 192; i++)
        kv_pool_put(&p, b[i]);
    CHECK_EQ_INT(p.n_chunks, 3);
    CHECK_EQ_INT(p.n_used, 128);
    CHECK_EQ_INT(kv_mem(be) - base, 3 * KV_POOL_CHUNK * 1000);
    // new blocks fill the free ones before the pool grows
    for (int i = 64; i < 192; i++)
        b[i] = kv_pool_get(&p);
    CHECK_EQ_INT(p.n_chunks, 4);
    CHECK_EQ_INT(p.n_used, 256);
    b[0] = kv_pool_get(&p); // the 257th block needs a fifth chunk
    CHECK_EQ_INT(p.n_chunks, 5);
    kv_pool_release(&p);
    CHECK_EQ_INT(p.n_used, 0);
    CHECK_EQ_INT(kv_pool_reserved_bytes(&p), 0);
    CHECK_EQ_INT(kv_mem(be), base);
}

// ---- a cache fed with constructed attention: sink head (-> special) and uniform head (-> full) ------

struct feeder {
    struct kn_backend *be;
    struct kv_cache *kv;
    int n_past;
    int n_layer, n_head_kv, n_head, D;
    unsigned uniform; // bit h: KV head h attends uniformly (-> full), else the first token only (-> special)
};

// Feeds n tokens with sink or uniform attention per KV head (f->uniform).
static int feed(struct feeder *f, int n, int phase) {
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    float *kv = calloc((size_t)n * f->n_head_kv * f->D, sizeof *kv);
    char err[256];
    int rc = -1;
    if (!pos || !kv) goto done;
    for (int i = 0; i < n; i++)
        pos[i] = f->n_past + i;
    if (kv_cache_reserve(f->kv, n, pos, NULL, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        goto done;
    }
    int ng = f->n_head / f->n_head_kv;
    for (int l = 0; l < f->n_layer; l++) {
        f->be->ops->kv_store(f->be, kv_cache_slots(f->kv, l), kv, kv, pos, n, f->n_head_kv, f->D);
        int stride;
        float *pr = kv_cache_probs(f->kv, l, &stride);
        if (!pr) continue;
        const struct kv_layer_view *v = kv_cache_view(f->kv, l);
        for (int hq = 0; hq < f->n_head; hq++) {
            const struct kv_head_view *hv = &v->heads[hq / ng];
            for (int i = 0; i < n; i++) {
                float *row = pr + ((size_t)hq * n + i) * stride;
                memset(row, 0, (size_t)stride * sizeof *row);
                int n_vis = 0;
                for (int s = 0; s < hv->n_fp; s++) {
                    int32_t p;
                    memcpy(&p, (const char *)hv->fp_blocks[s / KV_FP_BLOCK] + 4 * (s % KV_FP_BLOCK), 4);
                    if (p > pos[i]) continue;
                    if (!(f->uniform >> (hq / ng) & 1)) {
                        row[s] = p == 0 ? 1.0f : 0.0f;
                    } else {
                        row[s] = 1.0f;
                        n_vis++;
                    }
                }
                if (f->uniform >> (hq / ng) & 1)
                    for (int s = 0; s < hv->n_fp; s++)
                        row[s] /= (float)n_vis;
            }
        }
        if (kv_cache_observe(f->kv, l, pos)) goto done;
    }
    rc = kv_cache_commit(f->kv, phase);
    f->n_past += n;
done:
    free(pos);
    free(kv);
    return rc;
}

// kv_bytes recounted from the parts: pool blocks x block size, host metadata arrays at their capacity.
// With be, the backend's count of KV memory above be_base must equal what the pools reserved.
static void check_bytes(struct kv_cache *kv, struct kn_backend *be, uint64_t be_base) {
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    CHECK(kv_cache_stats(kv, &s) == 0);
    const struct kv_cache_params *p = kv_cache_get_params(kv);
    CHECK_EQ_INT(s.pool_blocks, kv_cache_blocks_in_use(kv));
    CHECK_EQ_INT(s.pool_blocks, kv->fp_pool.n_used + kv->q_pool.n_used);
    CHECK_EQ_INT(s.pool_bytes_reserved,
                 kv_pool_reserved_bytes(&kv->fp_pool) + kv_pool_reserved_bytes(&kv->q_pool));
    if (be) CHECK_EQ_INT(s.pool_bytes_reserved, kv_mem(be) - be_base); // the backend counted the same bytes
    uint64_t meta = 0, fp_blocks = 0;
    for (int i = 0; i < p->n_layer * p->n_head_kv; i++) {
        const struct kv_head *hd = &kv->heads[i];
        size_t per_slot = sizeof *hd->pos + sizeof *hd->flags + (hd->score ? sizeof *hd->score : 0) +
                          (hd->pend ? sizeof *hd->pend : 0);
        meta += (uint64_t)hd->cap_fpb * KV_FP_BLOCK * per_slot;
        fp_blocks += (uint64_t)hd->n_fpb;
    }
    if (p->bits == 16) {
        CHECK_EQ_INT(fp_blocks, kv->fp_pool.n_used);
        CHECK_EQ_INT(s.bytes_fp, kv->fp_pool.n_used * kv_fp_block_bytes(p->head_dim));
        CHECK_EQ_INT(s.bytes_codes + s.bytes_scales, 0);
        CHECK_EQ_INT(s.bytes_meta, meta);
        CHECK_EQ_INT(s.kv_bytes, kv->fp_pool.n_used * kv_fp_block_bytes(p->head_dim) + meta);
    }
    CHECK_EQ_INT(s.kv_bytes, s.bytes_fp + s.bytes_codes + s.bytes_scales + s.bytes_meta);
    uint64_t sum = 0;
    for (int i = 0; i < p->n_layer * p->n_head_kv; i++)
        sum += s.heads[i].bytes;
    CHECK_EQ_INT(sum, s.kv_bytes);
    CHECK_EQ_INT(s.kv_bytes_full, (uint64_t)s.n_past * p->n_layer * p->n_head_kv * 4 * p->head_dim);
    kv_stats_release(&s);
}

static struct kv_cache *fastgen_cache(struct kn_backend *be, int n_head_kv) {
    struct kv_cache_params p;
    kv_cache_params_default(&p);
    p.n_layer = 1;
    p.n_head_kv = n_head_kv;
    p.n_head = n_head_kv;
    p.head_dim = 16;
    p.n_ctx = 8192;
    p.policy = KV_POLICY_FASTGEN;
    char err[256];
    struct kv_cache *kv = kv_cache_init(be, &p, err, sizeof err);
    CHECK_MSG(kv != NULL, "%s", err);
    return kv;
}

// Chunks whose blocks all leave go back to the backend (one empty chunk is kept as a spare).
static void test_chunks_return(struct kn_backend *be) {
    uint64_t base = kv_mem(be);
    struct feeder f = {be, fastgen_cache(be, 2), 0, 1, 2, 2, 16, 0};
    if (!f.kv) return;
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 0);
    CHECK_EQ_INT(kv_mem(be), base);
    // a 6144-token prompt in 512-token micro-batches: 192 blocks per head, 384 blocks in 6 chunks
    kv_cache_begin_prompt(f.kv, 6144);
    size_t blk = kv_fp_block_bytes(16);
    for (int c = 0; c < 12; c++) {
        CHECK(feed(&f, 512, c == 11 ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK) == 0);
        if (c == 10) { // before the prompt ends nothing is evicted
            CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 2 * 176);
            CHECK_EQ_INT(kv_mem(be) - base, 6 * KV_POOL_CHUNK * blk);
        }
    }
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    CHECK(kv_cache_stats(f.kv, &s) == 0);
    CHECK_EQ_INT(s.heads[0].comps, KV_C_SPECIAL);
    CHECK_EQ_INT(s.heads[1].comps, KV_C_SPECIAL);
    CHECK_EQ_INT(s.retained_tokens, 2);
    // both heads hold the first token, in the first chunk; four of the five empty chunks were returned
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 2);
    CHECK_EQ_INT(s.pool_bytes_reserved, 2 * KV_POOL_CHUNK * blk);
    CHECK_EQ_INT(kv_mem(be) - base, 2 * KV_POOL_CHUNK * blk);
    check_bytes(f.kv, be, base);
    // decoding ordinary tokens under "special" takes no memory
    for (int i = 0; i < 100; i++)
        CHECK(feed(&f, 1, KV_PHASE_DECODE) == 0);
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 2);
    CHECK_EQ_INT(kv_mem(be) - base, 2 * KV_POOL_CHUNK * blk);
    kv_stats_release(&s);
    kv_cache_free(f.kv);
    CHECK_EQ_INT(kv_mem(be), base);
}

// Blocks freed by evictions are what new tokens take; clearing returns everything.
static void test_evict_reuse(struct kn_backend *be) {
    uint64_t base = kv_mem(be);
    struct feeder f = {be, fastgen_cache(be, 2), 0, 1, 2, 2, 16, 2u};
    if (!f.kv) return;
    // 2048 tokens: 64 blocks per head, interleaved in two chunks
    kv_cache_begin_prompt(f.kv, 2048);
    for (int c = 0; c < 4; c++)
        CHECK(feed(&f, 512, c == 3 ? KV_PHASE_PROMPT_END : KV_PHASE_PROMPT_CHUNK) == 0);
    struct kv_stats s;
    memset(&s, 0, sizeof s);
    CHECK(kv_cache_stats(f.kv, &s) == 0);
    CHECK_EQ_INT(s.heads[0].comps, KV_C_SPECIAL);
    CHECK_EQ_INT(s.heads[1].comps, KV_C_FULL);
    CHECK_EQ_INT(s.heads[0].retained, 1);
    CHECK_EQ_INT(s.heads[1].retained, 2048);
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 1 + 64);
    size_t blk = kv_fp_block_bytes(16);
    uint64_t reserved = s.pool_bytes_reserved;
    CHECK_EQ_INT(reserved, 2 * KV_POOL_CHUNK * blk); // head 1's blocks keep both chunks
    check_bytes(f.kv, be, base);
    // decoding: the full head grows by 9 blocks, all of them blocks head 0 gave back
    for (int i = 0; i < 260; i++)
        CHECK(feed(&f, 1, KV_PHASE_DECODE) == 0);
    CHECK(kv_cache_stats(f.kv, &s) == 0);
    CHECK_EQ_INT(s.heads[0].retained, 1);
    CHECK_EQ_INT(s.heads[1].retained, 2308);
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 1 + (2308 + 31) / 32);
    CHECK_EQ_INT(s.pool_bytes_reserved, reserved);
    CHECK_EQ_INT(kv_mem(be) - base, reserved);
    check_bytes(f.kv, be, base);
    // a second prompt (a new user turn) re-profiles on top
    kv_cache_begin_prompt(f.kv, f.n_past + 64);
    CHECK(feed(&f, 64, KV_PHASE_PROMPT_END) == 0);
    check_bytes(f.kv, be, base);
    // clearing returns everything
    kv_cache_clear(f.kv);
    CHECK_EQ_INT(kv_cache_blocks_in_use(f.kv), 0);
    CHECK_EQ_INT(kv_cache_n_past(f.kv), 0);
    CHECK(kv_cache_stats(f.kv, &s) == 0);
    CHECK_EQ_INT(s.pool_bytes_reserved, 0);
    CHECK_EQ_INT(s.retained_tokens, 0);
    CHECK_EQ_INT(s.bytes_fp, 0);
    CHECK_EQ_INT(kv_mem(be), base);
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(s.heads[i].comps, KV_C_FULL); // policies start over
    // and the cache works again after a clear
    f.n_past = 0;
    kv_cache_begin_prompt(f.kv, 100);
    CHECK(feed(&f, 100, KV_PHASE_PROMPT_END) == 0);
    CHECK(kv_cache_stats(f.kv, &s) == 0);
    CHECK_EQ_INT(s.heads[0].retained, 1);
    CHECK_EQ_INT(s.heads[1].retained, 100);
    kv_stats_release(&s);
    kv_cache_free(f.kv);
    CHECK_EQ_INT(kv_mem(be), base);
}

static void test_api_errors(struct kn_backend *be) {
    struct kv_cache_params p;
    kv_cache_params_default(&p);
    char err[256] = "";
    CHECK(kv_cache_init(be, &p, err, sizeof err) == NULL && err[0]); // no shape
    p.n_layer = 1;
    p.n_head_kv = 2;
    p.n_head = 3;
    p.head_dim = 16;
    p.n_ctx = 64;
    err[0] = 0;
    CHECK(kv_cache_init(be, &p, err, sizeof err) == NULL && err[0]); // heads not a multiple
    p.n_head = 4;
    p.recovery = 1.5f;
    err[0] = 0;
    CHECK(kv_cache_init(be, &p, err, sizeof err) == NULL && strstr(err, "--recovery"));
    p.recovery = 0.95f;
    p.bits = 3;
    CHECK(kv_cache_init(be, &p, err, sizeof err) == NULL && strstr(err, "--kv-bits"));
    p.bits = 16;
    struct kv_cache *kv = kv_cache_init(be, &p, err, sizeof err);
    CHECK_MSG(kv != NULL, "%s", err);
    if (!kv) return;
    int32_t pos[70];
    for (int i = 0; i < 70; i++)
        pos[i] = i;
    err[0] = 0;
    CHECK(kv_cache_reserve(kv, 70, pos, NULL, err, sizeof err) == -1 && strstr(err, "context is full"));
    CHECK_EQ_INT(kv_cache_blocks_in_use(kv), 0);
    CHECK(kv_cache_reserve(kv, 10, pos, NULL, err, sizeof err) == 0);
    CHECK(kv_cache_commit(kv, KV_PHASE_PROMPT_END) == 0);
    CHECK_EQ_INT(kv_cache_n_past(kv), 10);
    err[0] = 0;
    CHECK(kv_cache_reserve(kv, 1, pos + 5, NULL, err, sizeof err) == -1 && err[0]); // positions go forward
    kv_cache_free(kv);
}

// ---- a long generation on a random-weight model: fastgen holds fewer blocks than full --------------

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void test_long_generation(struct kn_backend *be, const char *dir) {
    struct synth_spec sp;
    CHECK(synth_preset(&sp, "tiny") == 0);
    sp.w_std = 0.08f;
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    CHECK_MSG(synth_write_gguf(&sp, path, err, sizeof err) == 0, "%s", err);
    struct model *m = model_load(path, be, err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (!m) return;
    const struct model_config *c = model_get_config(m);
    uint64_t base = kv_mem(be);
    struct kv_cache_params kp[2];
    struct kv_cache *kv[2];
    float *lg[2];
    for (int i = 0; i < 2; i++) {
        kv_cache_params_default(&kp[i]);
        kp[i].n_layer = c->n_layer;
        kp[i].n_head_kv = c->n_head_kv;
        kp[i].n_head = c->n_head;
        kp[i].head_dim = c->head_dim;
        kp[i].n_ctx = 400;
        kp[i].policy = i ? KV_POLICY_FASTGEN : KV_POLICY_FULL;
        kp[i].recovery = 0.85f; // random weights attend almost uniformly: 0.9 keeps every head full
        kv[i] = kv_cache_init(be, &kp[i], err, sizeof err);
        lg[i] = malloc((size_t)c->n_vocab * sizeof(float));
        CHECK_MSG(kv[i] != NULL, "%s", err);
    }
    if (kv[0] && kv[1] && lg[0] && lg[1]) {
        int32_t tok[64], pos[64];
        uint8_t fl[64];
        for (int i = 0; i < 64; i++) {
            tok[i] = i == 0 ? 1 : 3 + (i * 37 + 11) % (c->n_vocab - 3);
            pos[i] = i;
            fl[i] = (uint8_t)(i % 9 == 8 ? KV_TOK_PUNCT : 0);
        }
        for (int i = 0; i < 2; i++) {
            struct model_batch b = {
                .tokens = tok, .pos = pos, .flags = fl, .n = 64, .phase = KV_PHASE_PROMPT_END};
            CHECK_MSG(model_forward(m, kv[i], &b, lg[i], err, sizeof err) == 0, "%s", err);
        }
        uint64_t peak[2] = {0, 0};
        int over = 0;
        struct kv_stats s;
        memset(&s, 0, sizeof s);
        for (int step = 0; step < 300; step++) {
            int32_t t = argmax(lg[0], c->n_vocab), p = 64 + step;
            for (int i = 0; i < 2; i++) {
                struct model_batch b = {.tokens = &t, .pos = &p, .n = 1, .phase = KV_PHASE_DECODE};
                CHECK_MSG(model_forward(m, kv[i], &b, lg[i], err, sizeof err) == 0, "%s", err);
                uint64_t u = kv_cache_blocks_in_use(kv[i]);
                if (u > peak[i]) peak[i] = u;
            }
            CHECK(kv_cache_stats(kv[1], &s) == 0);
            for (int h = 0; h < c->n_layer * c->n_head_kv; h++)
                if (s.heads[h].budget >= 0 && s.heads[h].retained > s.heads[h].budget) over++;
        }
        struct kv_stats sf;
        memset(&sf, 0, sizeof sf);
        CHECK(kv_cache_stats(kv[0], &sf) == 0);
        CHECK(kv_cache_stats(kv[1], &s) == 0);
        int n_full = s.n_heads_by_comps[KV_C_FULL];
        printf(
            "long generation (364 tokens, T=0.85): full %llu blocks (%llu bytes), fastgen %llu blocks (%llu "
            "bytes), %d of %d heads full\n",
            (unsigned long long)sf.pool_blocks, (unsigned long long)sf.kv_bytes,
            (unsigned long long)s.pool_blocks, (unsigned long long)s.kv_bytes, n_full,
            c->n_layer * c->n_head_kv);
        CHECK_EQ_INT(sf.pool_blocks, c->n_layer * c->n_head_kv * ((364 + 31) / 32));
        CHECK_MSG(s.pool_blocks < sf.pool_blocks, "fastgen %llu blocks vs full %llu",
                  (unsigned long long)s.pool_blocks, (unsigned long long)sf.pool_blocks);
        CHECK(peak[1] < peak[0]);
        CHECK(s.kv_bytes < sf.kv_bytes);
        CHECK(s.retained_tokens < sf.retained_tokens);
        CHECK_EQ_INT(s.kv_bytes_full, sf.kv_bytes_full);
        CHECK_EQ_INT(over, 0);
        check_bytes(kv[0], NULL, 0);
        check_bytes(kv[1], NULL, 0);
        CHECK_EQ_INT(kv_mem(be) - base, sf.pool_bytes_reserved + s.pool_bytes_reserved);
        kv_stats_release(&s);
        kv_stats_release(&sf);
    }
    for (int i = 0; i < 2; i++) {
        kv_cache_free(kv[i]);
        free(lg[i]);
    }
    model_free(m);
    unlink(path);
}

int main(void) {
    char err[256];
    struct kn_backend *be = kn_cpu_init(2, err, sizeof err);
    CHECK_MSG(be != NULL, "%s", err);
    if (!be) return test_done();
    test_pool(be);
    test_chunks_return(be);
    test_evict_reuse(be);
    test_api_errors(be);
    char dir[] = "/tmp/kvchat_cache_XXXXXX";
    if (mkdtemp(dir)) {
        test_long_generation(be, dir);
        rmdir(dir);
    }
    kn_free(be);
    return test_done();
}
