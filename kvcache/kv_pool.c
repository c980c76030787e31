// kvcache/kv_pool.c — chunked block pool over the backend allocator (see kv_pool.h).
#include "kvcache/kv_pool.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void kv_pool_init(struct kv_pool *p, struct kn_backend *be, size_t block_bytes) {
    memset(p, 0, sizeof *p);
    p->be = be;
    p->block_bytes = block_bytes;
    p->keep_spare = 1;
}

void kv_pool_release(struct kv_pool *p) {
    for (int i = 0; i < p->n_chunks; i++) p->be->ops->dealloc(p->be, p->chunks[i].base);
    free(p->chunks);
    p->chunks = NULL;
    p->n_chunks = p->cap_chunks = 0;
    p->n_used = 0;
}

static int lowest_zero_bit(uint64_t x) {
    uint64_t inv = ~x;
    return inv ? __builtin_ctzll(inv) : -1;
}

void *kv_pool_get(struct kv_pool *p) {
    for (int i = 0; i < p->n_chunks; i++) {
        int b = lowest_zero_bit(p->chunks[i].used);
        if (b >= 0) {
            p->chunks[i].used |= 1ull << b;
            p->n_used++;
            return p->chunks[i].base + (size_t)b * p->block_bytes;
        }
    }
    if (p->n_chunks == p->cap_chunks) {
        int cap = p->cap_chunks ? 2 * p->cap_chunks : 8;
        struct kv_chunk *c = realloc(p->chunks, (size_t)cap * sizeof *c);
        if (!c) return NULL;
        p->chunks = c;
        p->cap_chunks = cap;
    }
    char *base = p->be->ops->alloc(p->be, p->block_bytes * KV_POOL_CHUNK, KN_MEM_KV);
    if (!base) return NULL;
    // keep chunks sorted by address so kv_pool_put can binary-search
    int at = p->n_chunks;
    while (at > 0 && p->chunks[at - 1].base > base) at--;
    memmove(p->chunks + at + 1, p->chunks + at, (size_t)(p->n_chunks - at) * sizeof *p->chunks);
    p->chunks[at].base = base;
    p->chunks[at].used = 1;
    p->n_chunks++;
    p->n_used++;
    return base;
}

static int find_chunk(const struct kv_pool *p, const char *blk) {
    int lo = 0, hi = p->n_chunks - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const char *b = p->chunks[mid].base;
        if (blk < b)
            hi = mid - 1;
        else if (blk >= b + p->block_bytes * KV_POOL_CHUNK)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

void kv_pool_put(struct kv_pool *p, void *block) {
    if (!block) return;
    int c = find_chunk(p, block);
    assert(c >= 0 && "block not from this pool");
    if (c < 0) return;
    size_t idx = (size_t)((char *)block - p->chunks[c].base) / p->block_bytes;
    assert(p->chunks[c].used & (1ull << idx));
    p->chunks[c].used &= ~(1ull << idx);
    p->n_used--;
    if (p->chunks[c].used == 0) {
        // free this chunk unless it is the only empty one we keep as a spare
        int n_empty = 0;
        for (int i = 0; i < p->n_chunks; i++) n_empty += p->chunks[i].used == 0;
        if (!p->keep_spare || n_empty > 1) {
            p->be->ops->dealloc(p->be, p->chunks[c].base);
            memmove(p->chunks + c, p->chunks + c + 1, (size_t)(p->n_chunks - c - 1) * sizeof *p->chunks);
            p->n_chunks--;
        }
    }
}

uint64_t kv_pool_reserved_bytes(const struct kv_pool *p) {
    return (uint64_t)p->n_chunks * KV_POOL_CHUNK * p->block_bytes;
}
