#!/usr/bin/env python3
"""tests/tools/ref_forward.py — an independent numpy forward pass (llama, gemma3) over a GGUF file, for
checking kvchat's numerics by hand: prints the top logits for a list of token ids.
Needs: pip install numpy gguf.   Usage: ref_forward.py MODEL.gguf ID [ID ...]"""
import sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def load(path):
    r = GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        try:
            meta[k] = f.contents()
        except Exception:
            pass
    W = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in t.shape][::-1]  # numpy order: rows last-dim-first
        W[t.name] = a.reshape(shape)
    return meta, W


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, base, neox):  # x: (n_head, hd)
    hd = x.shape[-1]
    i = np.arange(hd // 2)
    theta = pos * base ** (-2.0 * i / hd)
    c, s = np.cos(theta), np.sin(theta)
    y = x.copy()
    if neox:
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        y[..., : hd // 2] = a * c - b * s
        y[..., hd // 2:] = a * s + b * c
    else:
        a, b = x[..., 0::2], x[..., 1::2]
        y[..., 0::2] = a * c - b * s
        y[..., 1::2] = a * s + b * c
    return y


def forward(meta, W, ids):
    arch = meta['general.architecture']
    g = lambda k, d=None: meta.get(f'{arch}.{k}', d)
    D, L, H = g('embedding_length'), g('block_count'), g('attention.head_count')
    Hkv = g('attention.head_count_kv', H)
    hd = g('attention.key_length', D // H)
    eps = g('attention.layer_norm_rms_epsilon', 1e-5)
    base = g('rope.freq_base', 10000.0)
    gemma = arch == 'gemma3'
    win = g('attention.sliding_window', 0) if gemma else 0
    n = len(ids)
    x = W['token_embd.weight'][ids].astype(np.float64)
    if gemma:
        x = x * np.sqrt(D)
    K = [[None] * n for _ in range(L)]
    V = [[None] * n for _ in range(L)]
    out = W.get('output.weight', W['token_embd.weight'])
    logits = None
    for p in range(n):
        h = x[p]
        for l in range(L):
            b = f'blk.{l}.'
            swa = gemma and (l + 1) % 6 != 0
            xn = rmsnorm(h, W[b + 'attn_norm.weight'], eps)
            q = (W[b + 'attn_q.weight'] @ xn).reshape(H, hd)
            k = (W[b + 'attn_k.weight'] @ xn).reshape(Hkv, hd)
            v = (W[b + 'attn_v.weight'] @ xn).reshape(Hkv, hd)
            if gemma:
                q = rmsnorm(q, W[b + 'attn_q_norm.weight'], eps)
                k = rmsnorm(k, W[b + 'attn_k_norm.weight'], eps)
            bl = 10000.0 if swa else base
            q, k = rope(q, p, bl, gemma), rope(k, p, bl, gemma)
            K[l][p], V[l][p] = k, v
            lo = max(0, p - win + 1) if swa else 0
            att = np.zeros((H, hd))
            for hh in range(H):
                kh = hh // (H // Hkv)
                ks = np.stack([K[l][j][kh] for j in range(lo, p + 1)])
                vs = np.stack([V[l][j][kh] for j in range(lo, p + 1)])
                sc = ks @ q[hh] / np.sqrt(hd)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att[hh] = sc @ vs
            o = W[b + 'attn_output.weight'] @ att.reshape(-1)
            if gemma:
                o = rmsnorm(o, W[b + 'post_attention_norm.weight'], eps)
            h = h + o
            xn = rmsnorm(h, W[b + 'ffn_norm.weight'], eps)
            gt = W[b + 'ffn_gate.weight'] @ xn
            up = W[b + 'ffn_up.weight'] @ xn
            if gemma:
                act = 0.5 * gt * (1 + np.tanh(np.sqrt(2 / np.pi) * (gt + 0.044715 * gt ** 3)))
            else:
                act = gt / (1 + np.exp(-gt))
            d = W[b + 'ffn_down.weight'] @ (act * up)
            if gemma:
                d = rmsnorm(d, W[b + 'post_ffw_norm.weight'], eps)
            h = h + d
        logits = out @ rmsnorm(h, W['output_norm.weight'], eps)
    return logits


if __name__ == '__main__':
    meta, W = load(sys.argv[1])
    ids = [int(a) for a in sys.argv[2:]]
    lg = forward(meta, W, ids)
    top = np.argsort(-lg)[:10]
    print('top', [(int(i), round(float(lg[i]), 4)) for i in top])
