// model/llama2c.c — reading llama2.c checkpoints: the legacy header-only format (v0) and version 1.
#include "model/llama2c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define L2C_MAGIC 0x616b3432u

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int plausible(const int32_t *h) {
    // dim, hidden, layers, heads, kv_heads, vocab (may be negative), seq_len
    if (h[0] <= 0 || h[0] > 65536 || h[1] <= 0 || h[1] > 1 << 20 || h[2] <= 0 || h[2] > 1024) return 0;
    if (h[3] <= 0 || h[3] > 1024 || h[4] <= 0 || h[4] > h[3] || h[3] % h[4]) return 0;
    if (h[5] == 0 || h[5] > 1 << 22 || h[5] < -(1 << 22) || h[6] <= 0 || h[6] > 1 << 22) return 0;
    return h[0] % h[3] == 0;
}

int llama2c_sniff(const unsigned char *head, size_t n) {
    if (n < 28) return 0;
    uint32_t magic;
    memcpy(&magic, head, 4);
    if (magic == L2C_MAGIC) return 1;
    int32_t h[7];
    memcpy(h, head, 28);
    return plausible(h);
}

int llama2c_open(const char *path, struct llama2c_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    const char *bn = base_name(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open (%s)", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) || st.st_size < 28) {
        close(fd);
        snprintf(err, errlen, "%s: too small to be a llama2.c checkpoint", bn);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map (%s)", bn, strerror(errno));
        return -1;
    }
    const unsigned char *b = map;
    int32_t h[7];
    size_t off;
    int version;
    uint32_t magic;
    memcpy(&magic, b, 4);
    if (magic == L2C_MAGIC) {
        int32_t ver;
        if (size < 256) goto trunc;
        memcpy(&ver, b + 4, 4);
        if (ver != 1) {
            munmap(map, size);
            snprintf(err, errlen, "%s: llama2.c checkpoint version %d is not supported (only 0 and 1, fp32)", bn, ver);
            return -1;
        }
        memcpy(h, b + 8, 28);
        f->shared_classifier = b[36];
        off = 256;
        version = 1;
    } else {
        memcpy(h, b, 28);
        f->shared_classifier = h[5] > 0;
        if (h[5] < 0) h[5] = -h[5];
        off = 28;
        version = 0;
    }
    if (!plausible(h)) {
        munmap(map, size);
        snprintf(err, errlen, "%s: not a llama2.c checkpoint (implausible header)", bn);
        return -1;
    }
    f->dim = h[0];
    f->hidden_dim = h[1];
    f->n_layers = h[2];
    f->n_heads = h[3];
    f->n_kv_heads = h[4];
    f->vocab_size = h[5];
    f->seq_len = h[6];
    uint64_t D = (uint64_t)f->dim, H = (uint64_t)f->hidden_dim, L = (uint64_t)f->n_layers;
    uint64_t V = (uint64_t)f->vocab_size, KV = D / (uint64_t)f->n_heads * (uint64_t)f->n_kv_heads;
    uint64_t hs = D / (uint64_t)f->n_heads;
    uint64_t need = V * D + L * D * 2 + L * D * D * 2 + L * KV * D * 2 + L * H * D * 3 + D;
    if (version == 0) need += (uint64_t)f->seq_len * hs; // freq_cis real + imag (unused)
    if (!f->shared_classifier) need += V * D;
    if (off + need * 4 > size) goto trunc;
    const float *p = (const float *)(b + off);
    if (version == 0) {
        f->tok_embd = p; p += V * D;
        f->rms_att = p; p += L * D;
        f->wq = p; p += L * D * D;
        f->wk = p; p += L * KV * D;
        f->wv = p; p += L * KV * D;
        f->wo = p; p += L * D * D;
        f->rms_ffn = p; p += L * D;
        f->w1 = p; p += L * H * D;
        f->w2 = p; p += L * D * H;
        f->w3 = p; p += L * H * D;
        f->rms_final = p; p += D;
        p += (uint64_t)f->seq_len * hs; // freq_cis_real and freq_cis_imag, seq_len x hs/2 each
    } else {
        f->rms_att = p; p += L * D;
        f->rms_ffn = p; p += L * D;
        f->rms_final = p; p += D;
        f->tok_embd = p; p += V * D;
        f->wq = p; p += L * D * D;
        f->wk = p; p += L * KV * D;
        f->wv = p; p += L * KV * D;
        f->wo = p; p += L * D * D;
        f->w1 = p; p += L * H * D;
        f->w2 = p; p += L * D * H;
        f->w3 = p; p += L * H * D;
    }
    f->wcls = f->shared_classifier ? f->tok_embd : p;
    f->map = map;
    f->size = size;
    return 0;
trunc:
    munmap(map, size);
    snprintf(err, errlen, "%s: truncated llama2.c checkpoint (%zu bytes is less than the header implies)", bn, size);
    return -1;
}

void llama2c_close(struct llama2c_file *f) {
    if (f->map) munmap(f->map, f->size);
    memset(f, 0, sizeof *f);
}
