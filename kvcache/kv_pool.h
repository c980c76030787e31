// kvcache/kv_pool.h — a counted pool of fixed-size blocks in backend memory, grown and shrunk in chunks,
// so that freed blocks really return memory to the backend once a chunk empties.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "kernels/kn.h"

struct kv_chunk {
    char *base;     // backend memory, KV_POOL_CHUNK blocks
    uint64_t used;  // bit i set = block i handed out
};

struct kv_pool {
    struct kn_backend *be;
    size_t block_bytes;
    struct kv_chunk *chunks; // sorted by base address
    int n_chunks, cap_chunks;
    uint64_t n_used;         // blocks handed out
    int keep_spare;          // keep one empty chunk instead of freeing it (avoids alloc/free ping-pong)
};

#define KV_POOL_CHUNK 64

void kv_pool_init(struct kv_pool *p, struct kn_backend *be, size_t block_bytes);
// Returns all chunks to the backend.
void kv_pool_release(struct kv_pool *p);
// A block of block_bytes (contents undefined); NULL when the backend is out of memory.
void *kv_pool_get(struct kv_pool *p);
// Returns a block; frees its chunk when the chunk becomes empty (one spare chunk is kept).
void kv_pool_put(struct kv_pool *p, void *block);
uint64_t kv_pool_reserved_bytes(const struct kv_pool *p);
