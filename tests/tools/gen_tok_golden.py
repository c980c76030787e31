#!/usr/bin/env python3
# tests/tools/gen_tok_golden.py — writes tests/golden/tok_*.txt: reference token ids from Python sentencepiece.
"""Golden token ids for tests/test_tok.c.

  python3 tests/tools/gen_tok_golden.py [--shared ../shared] [--gguf assets/models/gemma-3-270m-q4_k_m.gguf]

Needs `sentencepiece` (pip); for the Gemma file also `gguf`, `numpy` and `protobuf`.

tok512 / llama2: ids straight from SentencePieceProcessor(model_file=...).encode(text), the models' own
reference. gemma3: no tokenizer.model is available here, so the reference is a SentencePiece ModelProto built
in Python with the official protobuf classes (sentencepiece_model_pb2) from the GGUF vocabulary as read by the
`gguf` package, with Gemma 3's tokenizer settings (see gemma_proto). That shares only the settings with
tok_spm.cc, not code; the settings themselves are pinned by published Hugging Face ids (GEMMA_ANCHORS),
which this script asserts before writing anything.

File format: '#' comment lines, then one case per line, four tab-separated fields:
  mode   'plain' (tok_encode) or 'special' (tok_encode_special: control/unknown pieces spelled in the text
         become their id, each raw segment between them is encoded on its own)
  text   escaped: \\\\ \\t \\n \\r and \\xHH for other bytes < 0x20 and 0x7f; other UTF-8 as is
  ids    space-separated (empty when none)
  decode SentencePiece's decode(ids), escaped the same way
"""
import argparse
import hashlib
import os
import sys

import sentencepiece as spm

CASES = [
    "Once upon a time, there was a little girl named Lily.",
    "I believe the meaning of life is",
    "",
    " ",
    "  ",
    "a",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  two leading spaces",
    "two trailing spaces  ",
    "runs   of    spaces     inside",
    "tab\tseparated\tvalues",
    "line one\nline two\n",
    "\n\nblank lines\n\n\n",
    "\r\nwindows line\r\n",
    "mixed \t \n whitespace",
    "café naïve résumé façade Ångström",
    "Ünïcödé ÀÉÎÕÜ ß ø œ",
    "e\u0301 combining acute",
    "日本語のテキストです。",
    "中文字符测试，标点符号！",
    "한국어 텍스트",
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ધ્રુવ",
    "emoji 😀 😂 🥲 🫩",
    "family 👨‍👩‍👧‍👦 flag 🇫🇷 thumbs 👍🏽",
    "❤️ ✨ ➡️ 🚶‍♀️",
    "🗽⃢⃢🗿",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
    "𠜎𠜱𠝹 CJK extension B",
    "\U0010fffd plane 16 private use",
    "\ufffd replacement char",
    "0",
    "42",
    "3.14159",
    "1234567890",
    "12345678901234567890123456789",
    "2024-01-15 10:30:00",
    "$1,234.56 and 1e-10",
    "+1 (555) 123-4567",
    "!!!",
    "...",
    "?!?!",
    "---",
    "(((nested)))",
    "[brackets] {braces} <angles>",
    "a,b;c:d",
    "\"double\" 'single'",
    "email@example.com",
    "https://example.com/path?q=1&r=2#frag",
    "C:\\path\\to\\file",
    "x == y && z != w || !v",
    "def f(x):\n    return x * 2\n",
    "int main(void) { return 0; }",
    "    four-space indent",
    "\tint x;",
    "\x01\x02 control bytes \x7f",
    "zero\u200bwidth space",
    "nbsp\u00a0here",
    "ideographic\u3000space",
    "em\u2014dash \u2013 en \u201ccurly\u201d \u2018quotes\u2019 \u2026",
    "¿Qué? ¡Sí! «guillemets»",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ！",
    "ﬁ ligature",
    "<s>",
    "</s>",
    "<unk>",
    "<s>literal text</s>",
    "<pad>",
    "<0x41>",
    "\u2581already escaped",
    "under_score",
    "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism",
    "A" * 50,
    "The quick brown fox jumps over the lazy dog. " * 3,
]

SPECIAL_CASES = {
    "llama": [
        "<s>",
        "</s>",
        "<s>hi</s> there",
        "<s>[INST] hello [/INST]",
        "</s><s>[INST] again [/INST] ok",
        "text<unk>more",
        "<s><s>",
    ],
    "gemma3": [
        "<start_of_turn>user\nwhat is the capital of the Netherlands?<end_of_turn>\n<start_of_turn>model\n",
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n",
        "<start_of_turn>",
        "<start_of_turn><end_of_turn>",
        "<unused5> blah",
        "<mask>",
        "<eos>text",
        "a<start_of_turn",
    ],
}

# Published Gemma 3 tokenizations, each (mode, text, ids or None, pieces or None):
# - ids from knights-analytics/hugot (its XLA Gemma test, "hard coded python tokens" of the HF tokenizer);
# - pieces from Dhruv Patel's "(Re)building Gemma tokenizer in Python" (2025), which prints
#   sentencepiece encode_as_pieces of the real Gemma 3 tokenizer.model. There <start_of_turn> and <unusedN>
#   are user-defined (always matched); in the GGUF they are control, so here they need 'special' mode,
#   while <bos> is control in both and stays split in 'plain' mode.
GEMMA_ANCHORS = [
    ("special", "<bos><start_of_turn>user\nwhat is the capital of the Netherlands?<end_of_turn>\n",
     [2, 105, 2364, 107, 14070, 563, 506, 5279, 529, 506, 23933, 236881, 106, 107], None),
    ("special", "<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model", None,
     ["<start_of_turn>", "user", "\n", "Who", "\u2581are", "\u2581you", "?", "<end_of_turn>", "\n",
      "<start_of_turn>", "model"]),
    ("plain", "<bos>Heyllo", None, ["<", "bos", ">", "Hey", "llo"]),
    ("special", "<unused10> blahblahblah", None, ["<unused10>", "\u2581blah", "blah", "blah"]),
    ("plain", "\U0001fae9", None, ["<0xF0>", "<0x9F>", "<0xAB>", "<0xA9>"]),
]


def esc(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def special_pieces(sp):
    """Control and unknown pieces: what tok_encode_special splits out of text."""
    return {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}


def encode_special(sp, specials, text):
    """Longest control/unknown piece at each position, leftmost first; every raw segment encoded alone."""
    max_len = max(len(p) for p in specials)
    ids, seg, i = [], 0, 0
    while i < len(text):
        hit = None
        for n in range(min(max_len, len(text) - i), 0, -1):
            if text[i:i + n] in specials:
                hit = n
                break
        if hit is None:
            i += 1
            continue
        if i > seg:
            ids += sp.encode(text[seg:i])
        ids.append(specials[text[i:i + hit]])
        i += hit
        seg = i
    if seg < len(text):
        ids += sp.encode(text[seg:])
    return ids


def write(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for h in header:
            f.write("# " + h + "\n")
        for mode, text, ids, dec in rows:
            f.write("%s\t%s\t%s\t%s\n" % (mode, esc(text), " ".join(map(str, ids)), esc(dec)))
    print("wrote %s (%d cases)" % (path, len(rows)))


def rows_for(sp, family):
    rows = [("plain", t, sp.encode(t), sp.decode(sp.encode(t))) for t in CASES]
    specials = special_pieces(sp)
    for t in SPECIAL_CASES[family]:
        ids = encode_special(sp, specials, t)
        rows.append(("special", t, ids, sp.decode(ids)))
    return rows


def gemma_proto(gguf_path):
    """SentencePiece ModelProto for a Gemma 3 GGUF vocabulary, with Gemma 3's tokenizer.model settings:
    BPE, byte_fallback, split_digits, allow_whitespace_only_pieces; identity normalizer, no dummy prefix,
    extra whitespace kept, spaces escaped to U+2581. llama.cpp's converter wrote user-defined pieces with
    U+2581 turned into ' ' (its "pre-normalize user-defined spaces"), so they are turned back; the piece at
    unknown_token_id (typed control in the GGUF) is the one UNKNOWN piece."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb

    r = gguf.GGUFReader(gguf_path)

    def field(name):
        return r.fields[name]

    def scalar(name):
        f = field(name)
        return f.parts[f.data[0]][0]

    assert bytes(field("general.architecture").parts[-1]).decode() == "gemma3"
    assert bytes(field("tokenizer.ggml.model").parts[-1]).decode() == "llama"
    tf = field("tokenizer.ggml.tokens")
    toks = [bytes(tf.parts[i]).decode("utf-8") for i in tf.data]
    sf = field("tokenizer.ggml.scores")
    scores = [float(sf.parts[i][0]) for i in sf.data]
    yf = field("tokenizer.ggml.token_type")
    types = [int(yf.parts[i][0]) for i in yf.data]
    bos, eos = int(scalar("tokenizer.ggml.bos_token_id")), int(scalar("tokenizer.ggml.eos_token_id"))
    unk, pad = int(scalar("tokenizer.ggml.unknown_token_id")), int(scalar("tokenizer.ggml.padding_token_id"))
    assert not bool(scalar("tokenizer.ggml.add_space_prefix"))

    m = pb.ModelProto()
    for i, (p, s, t) in enumerate(zip(toks, scores, types)):
        if t == 4:
            p = p.replace(" ", "\u2581")
        if i == unk:
            t = 2
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = p, s, t
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(toks)
    ts.byte_fallback = True
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = unk, bos, eos, pad
    ts.unk_piece, ts.bos_piece, ts.eos_piece, ts.pad_piece = toks[unk], toks[bos], toks[eos], toks[pad]
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return m.SerializeToString(), gguf


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
    ap.add_argument("--gguf", default=os.path.join(root, "assets", "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    common = ["generated by tests/tools/gen_tok_golden.py with Python sentencepiece %s" % pkg_version("sentencepiece"),
              "fields: mode<TAB>escaped text<TAB>ids<TAB>escaped decode(ids)"]

    models = [("tok512", "stories260K/tok512.model"), ("llama2", "llama2-tokenizer/tokenizer.model")]
    for name, rel in models:
        path = os.path.join(a.shared, "models", rel)
        sp = spm.SentencePieceProcessor(model_file=path)
        rows = rows_for(sp, "llama")
        hdr = common + ["model: shared/models/%s sha256 %s" % (rel, sha256(path)),
                        "reference: SentencePieceProcessor(model_file).encode(text) / decode(ids)"]
        write(os.path.join(a.out, "tok_%s.txt" % name), hdr, rows)

    if not os.path.exists(a.gguf):
        print("no %s: tok_gemma3.txt not regenerated" % a.gguf)
        return 0
    proto, gguf = gemma_proto(a.gguf)
    sp = spm.SentencePieceProcessor(model_file=None, model_proto=proto)
    specials = special_pieces(sp)
    rows = rows_for(sp, "gemma3")
    for mode, text, want_ids, want_pieces in GEMMA_ANCHORS:
        got = encode_special(sp, specials, text) if mode == "special" else sp.encode(text)
        if want_ids is not None:
            assert got == want_ids, (text, got, want_ids)
        if want_pieces is not None:
            assert [sp.id_to_piece(i) for i in got] == want_pieces, (text, got, want_pieces)
        rows.append((mode, text, got, sp.decode(got)))
    hdr = common + ["model: %s sha256 %s (vocabulary read with Python gguf %s, protobuf %s)"
                    % (os.path.basename(a.gguf), sha256(a.gguf), pkg_version("gguf"), pkg_version("protobuf")),
                    "reference: Python-built ModelProto with Gemma 3 settings (see gemma_proto); the last %d cases "
                    "are published Gemma 3 tokenizations (GEMMA_ANCHORS), asserted before writing" % len(GEMMA_ANCHORS)]
    write(os.path.join(a.out, "tok_gemma3.txt"), hdr, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
