// tokenizer/tok_spm.cc — extern "C" over libsentencepiece: .model files, GGUF vocabularies, encoding.
#include "tokenizer/tok.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/tok_text.h"
#include "tokenizer/tok_vocab.h"
extern "C" {
#include "model/gguf.h"
}

struct tok {
    sentencepiece::SentencePieceProcessor sp;
    std::vector<std::string> pieces; // what tok_piece returns (original text; see tok_load_vocab's fix-ups)
    std::vector<float> scores;
    std::vector<int> types; // enum tok_type
    int bos = -1, eos = -1, unk = -1;
    bool drop_lead = false; // decoder drops the first piece's leading U+2581
    // Control and unknown pieces that tok_encode_special matches in text (views into `pieces`).
    std::unordered_map<std::string_view, int> special;
    size_t special_max = 0;
    bool special_first[256] = {}; // first bytes of those pieces: a cheap reject per text position
};

namespace {

void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// ---- protobuf wire format (the subset a SentencePiece ModelProto needs) -----------------------------------
// Field numbers from sentencepiece_model.proto. ModelProto: pieces = 1 (repeated SentencePiece),
// trainer_spec = 2, normalizer_spec = 3. SentencePiece: piece = 1 (string), score = 2 (float), type = 3.

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

void put_varint(std::string &o, uint64_t v) {
    while (v >= 0x80) {
        o.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    o.push_back(static_cast<char>(v));
}

void put_tag(std::string &o, unsigned field, unsigned wire) { put_varint(o, uint64_t(field) << 3 | wire); }

// int32/enum/bool fields; a negative int32 is sign-extended to 10 bytes, as protobuf encodes it.
void put_int(std::string &o, unsigned field, int64_t v) {
    put_tag(o, field, WT_VARINT);
    put_varint(o, static_cast<uint64_t>(v));
}

void put_bytes(std::string &o, unsigned field, std::string_view s) {
    put_tag(o, field, WT_LEN);
    put_varint(o, s.size());
    o.append(s.data(), s.size());
}

void put_float(std::string &o, unsigned field, float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    put_tag(o, field, WT_I32);
    for (int i = 0; i < 4; i++)
        o.push_back(static_cast<char>(b >> (8 * i) & 0xFF));
}

struct pb_in {
    const uint8_t *p, *end;
};

bool get_varint(pb_in &r, uint64_t &v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r.p >= r.end) return false;
        uint8_t b = *r.p++;
        v |= uint64_t(b & 0x7F) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

// One field: its number, wire type, and the value (varints) or payload bounds (length-delimited).
struct pb_field {
    unsigned num = 0, wire = 0;
    uint64_t value = 0;
    pb_in payload{nullptr, nullptr};
};

bool get_field(pb_in &r, pb_field &f) {
    uint64_t key, n;
    if (!get_varint(r, key)) return false;
    f.num = static_cast<unsigned>(key >> 3);
    f.wire = static_cast<unsigned>(key & 7);
    switch (f.wire) {
    case WT_VARINT:
        return get_varint(r, f.value);
    case WT_I64:
        n = 8;
        break;
    case WT_I32:
        n = 4;
        break;
    case WT_LEN:
        if (!get_varint(r, n)) return false;
        break;
    default:
        return false; // groups: not in sentencepiece_model.proto
    }
    if (n > static_cast<uint64_t>(r.end - r.p)) return false;
    f.payload = {r.p, r.p + n};
    r.p += n;
    return true;
}

// What SentencePieceProcessor does not expose in libsentencepiece 0.1.97: piece types (no IsUserDefined)
// and the normalizer flags that decide whether decoding drops the leading space.
struct model_facts {
    std::vector<int> types;
    bool add_dummy_prefix = true, remove_extra_whitespaces = true; // proto2 defaults
};

bool parse_model(std::string_view bytes, model_facts &facts) {
    const auto *b = reinterpret_cast<const uint8_t *>(bytes.data());
    pb_in r{b, b + bytes.size()};
    pb_field f, g;
    while (r.p < r.end) {
        if (!get_field(r, f)) return false;
        if (f.num == 1 && f.wire == WT_LEN) { // SentencePiece
            int type = TOK_NORMAL;
            for (pb_in sub = f.payload; sub.p < sub.end;) {
                if (!get_field(sub, g)) return false;
                if (g.num == 3 && g.wire == WT_VARINT) type = static_cast<int>(g.value);
            }
            facts.types.push_back(type);
        } else if (f.num == 3 && f.wire == WT_LEN) { // NormalizerSpec; repeated occurrences merge, last wins
            for (pb_in sub = f.payload; sub.p < sub.end;) {
                if (!get_field(sub, g)) return false;
                if (g.num == 3 && g.wire == WT_VARINT) facts.add_dummy_prefix = g.value != 0;
                if (g.num == 4 && g.wire == WT_VARINT) facts.remove_extra_whitespaces = g.value != 0;
            }
        }
    }
    return true;
}

int clamp_type(int32_t t) { return t >= TOK_NORMAL && t <= TOK_BYTE ? t : TOK_NORMAL; }

// Replaces every ' ' with U+2581 (undoes llama.cpp's "pre-normalize user-defined spaces").
std::string escape_spaces(std::string_view s) {
    std::string o;
    o.reserve(s.size());
    for (char c : s) {
        if (c == ' ')
            o += "\xE2\x96\x81";
        else
            o.push_back(c);
    }
    return o;
}

void index_specials(tok &t) {
    for (size_t i = 0; i < t.pieces.size(); i++) {
        const std::string &p = t.pieces[i];
        if (p.empty() || (t.types[i] != TOK_CONTROL && t.types[i] != TOK_UNKNOWN)) continue;
        if (t.special.emplace(std::string_view(p), static_cast<int>(i)).second) {
            t.special_first[static_cast<unsigned char>(p[0])] = true;
            if (p.size() > t.special_max) t.special_max = p.size();
        }
    }
}

bool encode_into(const tok &t, std::string_view text, std::vector<int> &out) {
    if (text.empty()) return true;
    std::vector<int> ids;
    if (!t.sp.Encode(text, &ids).ok()) return false;
    out.insert(out.end(), ids.begin(), ids.end());
    return true;
}

int copy_ids(const std::vector<int> &ids, int32_t *out, int cap) {
    if (ids.size() > static_cast<size_t>(INT32_MAX)) return -1;
    int n = static_cast<int>(ids.size());
    for (int i = 0; i < n && i < cap && out; i++)
        out[i] = ids[static_cast<size_t>(i)];
    return n;
}

} // namespace

// ---- loading ----------------------------------------------------------------------------------------------

extern "C" struct tok *tok_load_model(const char *path, char *err, size_t errlen) {
    try {
        if (!path || !*path) {
            set_err(err, errlen, "no tokenizer model path given");
            return nullptr;
        }
        FILE *f = std::fopen(path, "rb");
        if (!f) {
            set_err(err, errlen, "%s: cannot open (%s)", path, std::strerror(errno));
            return nullptr;
        }
        std::string bytes;
        char buf[1 << 16];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
            bytes.append(buf, n);
        bool rd_err = std::ferror(f) != 0;
        std::fclose(f);
        if (rd_err) {
            set_err(err, errlen, "%s: read error", path);
            return nullptr;
        }
        model_facts facts;
        const char *why = bytes.empty()                ? "empty file"
                          : !parse_model(bytes, facts) ? "not a protobuf ModelProto"
                          : facts.types.empty()        ? "no pieces"
                                                       : nullptr;
        if (why) {
            set_err(err, errlen, "%s: not a SentencePiece model (%s)", path, why);
            return nullptr;
        }
        auto t = std::make_unique<tok>();
        auto st = t->sp.LoadFromSerializedProto(bytes);
        if (!st.ok()) {
            set_err(err, errlen, "%s: not a SentencePiece model (%s)", path, st.ToString().c_str());
            return nullptr;
        }
        int nv = t->sp.GetPieceSize();
        if (nv != static_cast<int>(facts.types.size())) {
            set_err(err, errlen, "%s: not a SentencePiece model (piece count mismatch)", path);
            return nullptr;
        }
        t->pieces.reserve(static_cast<size_t>(nv));
        t->scores.reserve(static_cast<size_t>(nv));
        for (int i = 0; i < nv; i++) {
            t->pieces.push_back(t->sp.IdToPiece(i));
            t->scores.push_back(t->sp.GetScore(i));
        }
        t->types.resize(static_cast<size_t>(nv));
        for (int i = 0; i < nv; i++)
            t->types[static_cast<size_t>(i)] = clamp_type(facts.types[static_cast<size_t>(i)]);
        t->bos = t->sp.bos_id();
        t->eos = t->sp.eos_id();
        t->unk = t->sp.unk_id();
        t->drop_lead = facts.add_dummy_prefix || facts.remove_extra_whitespaces;
        index_specials(*t);
        return t.release();
    } catch (const std::exception &e) {
        set_err(err, errlen, "%s: %s", path ? path : "tokenizer", e.what());
    } catch (...) {
        set_err(err, errlen, "%s: unexpected error", path ? path : "tokenizer");
    }
    return nullptr;
}

extern "C" struct tok *tok_load_vocab(const struct tok_vocab *v, char *err, size_t errlen) {
    try {
        if (!v || v->n_vocab <= 0 || !v->pieces) {
            set_err(err, errlen, "tokenizer vocabulary is empty");
            return nullptr;
        }
        const int n = v->n_vocab;
        const size_t un = static_cast<size_t>(n);
        const struct {
            const char *name;
            int id;
        } ids[] = {{"bos", v->bos_id}, {"eos", v->eos_id}, {"unk", v->unk_id}, {"pad", v->pad_id}};
        for (const auto &x : ids) {
            if (x.id < -1 || x.id >= n) {
                set_err(err, errlen, "tokenizer %s id %d out of range (vocabulary of %d)", x.name, x.id, n);
                return nullptr;
            }
        }
        auto t = std::make_unique<tok>();
        t->pieces.resize(un);
        t->scores.assign(un, 0.0f);
        t->types.assign(un, TOK_NORMAL);
        for (size_t i = 0; i < un; i++) {
            const char *p = v->pieces[i];
            size_t len = p ? (v->piece_lens ? v->piece_lens[i] : std::strlen(p)) : 0;
            if (v->types) t->types[i] = clamp_type(v->types[i]);
            if (v->scores) t->scores[i] = v->scores[i];
            std::string_view s(p ? p : "", len);
            t->pieces[i] = t->types[i] == TOK_USER_DEFINED ? escape_spaces(s) : std::string(s);
        }
        int unk = v->unk_id;
        if (unk < 0) {
            for (int i = 0; i < n && unk < 0; i++)
                if (t->types[static_cast<size_t>(i)] == TOK_UNKNOWN) unk = i;
        }
        if (unk < 0) {
            set_err(err, errlen, "tokenizer vocabulary has no unknown-token piece (SentencePiece needs one)");
            return nullptr;
        }
        for (size_t i = 0; i < un; i++)
            if (t->types[i] == TOK_UNKNOWN) t->types[i] = TOK_CONTROL;
        t->types[static_cast<size_t>(unk)] = TOK_UNKNOWN;
        // SentencePiece accepts byte pieces only with byte_fallback, and byte_fallback only with all 256 of
        // them; with fewer, the byte pieces still decode as bytes here but the proto calls them unused.
        bool have_byte[256] = {};
        int n_bytes = 0;
        for (size_t i = 0; i < un; i++) {
            if (t->types[i] != TOK_BYTE) continue;
            int b = tok_text_byte_piece(t->pieces[i].data(), t->pieces[i].size());
            if (b < 0)
                t->types[i] = TOK_NORMAL; // not spelled <0xAB>: an ordinary piece
            else if (!have_byte[b]) {
                have_byte[b] = true;
                n_bytes++;
            }
        }
        const bool byte_fallback = n_bytes == 256;

        // The proto: pieces first (field 1), then trainer_spec (2) and normalizer_spec (3).
        std::string proto, msg;
        proto.reserve(un * 24);
        std::unordered_set<std::string_view> seen;
        seen.reserve(un * 2);
        seen.insert(t->pieces[static_cast<size_t>(unk)]);
        for (size_t i = 0; i < un; i++) {
            const std::string &p = t->pieces[i];
            bool dup = p.empty() || (static_cast<int>(i) != unk && !seen.insert(p).second);
            msg.clear();
            if (dup) { // private name: invalid UTF-8, so no input text can ever spell it
                put_bytes(msg, 1,
                          "\xFF"
                          "kvchat-unnamed-" +
                              std::to_string(i));
                put_float(msg, 2, t->scores[i]);
                put_int(msg, 3, TOK_UNUSED);
            } else {
                put_bytes(msg, 1, p);
                put_float(msg, 2, t->scores[i]);
                put_int(msg, 3, t->types[i] == TOK_BYTE && !byte_fallback ? TOK_UNUSED : t->types[i]);
            }
            put_bytes(proto, 1, msg);
        }
        auto piece_or = [&](int id, const char *dflt) -> std::string_view {
            return id >= 0 ? std::string_view(t->pieces[static_cast<size_t>(id)]) : std::string_view(dflt);
        };
        // TrainerSpec field numbers: model_type 3 (BPE = 2), vocab_size 4, split_digits 25,
        // allow_whitespace_only_pieces 26, byte_fallback 35, unk/bos/eos/pad_id 40-43, unk/bos/eos/pad_piece
        // 45-48.
        msg.clear();
        put_int(msg, 3, 2);
        put_int(msg, 4, n);
        put_int(msg, 25, 1);
        put_int(msg, 26, 1);
        put_int(msg, 35, byte_fallback ? 1 : 0);
        put_int(msg, 40, unk);
        put_int(msg, 41, v->bos_id);
        put_int(msg, 42, v->eos_id);
        put_int(msg, 43, v->pad_id);
        put_bytes(msg, 45, piece_or(unk, "<unk>"));
        put_bytes(msg, 46, piece_or(v->bos_id, "<s>"));
        put_bytes(msg, 47, piece_or(v->eos_id, "</s>"));
        put_bytes(msg, 48, piece_or(v->pad_id, "<pad>"));
        put_bytes(proto, 2, msg);
        // NormalizerSpec: name 1 ("identity": no precompiled charsmap), add_dummy_prefix 3,
        // remove_extra_whitespaces 4, escape_whitespaces 5.
        msg.clear();
        put_bytes(msg, 1, "identity");
        put_int(msg, 3, v->add_space_prefix ? 1 : 0);
        put_int(msg, 4, v->remove_extra_whitespaces ? 1 : 0);
        put_int(msg, 5, 1);
        put_bytes(proto, 3, msg);

        auto st = t->sp.LoadFromSerializedProto(proto);
        if (!st.ok()) {
            set_err(err, errlen, "tokenizer vocabulary rejected by SentencePiece (%s)",
                    st.ToString().c_str());
            return nullptr;
        }
        t->bos = v->bos_id;
        t->eos = v->eos_id;
        t->unk = unk;
        t->drop_lead = v->add_space_prefix || v->remove_extra_whitespaces;
        index_specials(*t);
        return t.release();
    } catch (const std::exception &e) {
        set_err(err, errlen, "tokenizer vocabulary: %s", e.what());
    } catch (...) {
        set_err(err, errlen, "tokenizer vocabulary: unexpected error");
    }
    return nullptr;
}

namespace {

bool str_eq(const char *s, size_t n, const char *lit) {
    return std::strlen(lit) == n && std::memcmp(s, lit, n) == 0;
}

int gguf_id(const struct gguf *g, const char *key, int n_vocab, int &out, char *err, size_t errlen) {
    uint32_t v;
    int r = gguf_get_u32(g, key, &v);
    out = -1;
    if (r == -1) return 0;
    if (r != 0 || v >= static_cast<uint32_t>(n_vocab)) {
        // llama.cpp writes -1 (as int32) for "no such token" in some files; read it as absent
        int64_t s;
        if (gguf_get_i64(g, key, &s) == 0 && s < 0) return 0;
        set_err(err, errlen, "GGUF %s is not a token id of the %d-token vocabulary", key, n_vocab);
        return -1;
    }
    out = static_cast<int>(v);
    return 0;
}

} // namespace

extern "C" struct tok *tok_load_gguf(const struct gguf *g, char *err, size_t errlen) {
    try {
        if (!g) {
            set_err(err, errlen, "no GGUF file given for the tokenizer");
            return nullptr;
        }
        const char *s;
        size_t len;
        int r = gguf_get_str(g, "tokenizer.ggml.model", &s, &len);
        if (r == -1) {
            set_err(err, errlen,
                    "GGUF has no tokenizer (tokenizer.ggml.model missing); give one with --tokenizer");
            return nullptr;
        }
        if (r != 0 || !str_eq(s, len, "llama")) {
            std::string name = r == 0 ? std::string(s, len) : std::string("(not a string)");
            set_err(err, errlen,
                    "GGUF tokenizer.ggml.model is \"%s\"; only SentencePiece vocabularies (\"llama\") are "
                    "supported",
                    name.c_str());
            return nullptr;
        }
        int et;
        uint64_t n;
        const void *data;
        if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != 0 || et != GGUF_T_STRING) {
            set_err(err, errlen, "GGUF tokenizer.ggml.tokens is missing or not a string array");
            return nullptr;
        }
        if (n == 0 || n > static_cast<uint64_t>(INT32_MAX)) {
            set_err(err, errlen, "GGUF tokenizer.ggml.tokens has %llu entries",
                    static_cast<unsigned long long>(n));
            return nullptr;
        }
        const size_t un = static_cast<size_t>(n);
        std::vector<const char *> pieces(un);
        std::vector<size_t> lens(un);
        for (size_t i = 0; i < un; i++) {
            if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &pieces[i], &lens[i]) != 0) {
                set_err(err, errlen, "GGUF tokenizer.ggml.tokens[%zu] is unreadable", i);
                return nullptr;
            }
        }
        std::vector<float> scores;
        if (gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data) == 0) {
            if (et != GGUF_T_FLOAT32 || n != un || !data) {
                set_err(err, errlen, "GGUF tokenizer.ggml.scores is not %zu float32 values", un);
                return nullptr;
            }
            scores.resize(un);
            std::memcpy(scores.data(), data, un * sizeof(float)); // GGUF is little-endian, like our hosts
        }
        std::vector<int32_t> types;
        if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data) == 0) {
            if ((et != GGUF_T_INT32 && et != GGUF_T_UINT32) || n != un || !data) {
                set_err(err, errlen, "GGUF tokenizer.ggml.token_type is not %zu int32 values", un);
                return nullptr;
            }
            types.resize(un);
            std::memcpy(types.data(), data, un * sizeof(int32_t));
        }
        struct tok_vocab v = {};
        v.n_vocab = static_cast<int>(un);
        v.pieces = pieces.data();
        v.piece_lens = lens.data();
        v.scores = scores.empty() ? nullptr : scores.data();
        v.types = types.empty() ? nullptr : types.data();
        if (gguf_id(g, "tokenizer.ggml.bos_token_id", v.n_vocab, v.bos_id, err, errlen) ||
            gguf_id(g, "tokenizer.ggml.eos_token_id", v.n_vocab, v.eos_id, err, errlen) ||
            gguf_id(g, "tokenizer.ggml.unknown_token_id", v.n_vocab, v.unk_id, err, errlen) ||
            gguf_id(g, "tokenizer.ggml.padding_token_id", v.n_vocab, v.pad_id, err, errlen))
            return nullptr;
        // add_space_prefix: llama.cpp's default is true; Gemma tokenizers never add one, so files of the
        // gemma family that lack the key (older converters) default to false.
        bool gemma = false;
        if (gguf_get_str(g, "general.architecture", &s, &len) == 0)
            gemma = len >= 5 && std::memcmp(s, "gemma", 5) == 0;
        int asp = gemma ? 0 : 1;
        if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &asp) == -2) {
            set_err(err, errlen, "GGUF tokenizer.ggml.add_space_prefix is not a bool");
            return nullptr;
        }
        v.add_space_prefix = asp;
        v.remove_extra_whitespaces = 0;
        return tok_load_vocab(&v, err, errlen);
    } catch (const std::exception &e) {
        set_err(err, errlen, "GGUF tokenizer: %s", e.what());
    } catch (...) {
        set_err(err, errlen, "GGUF tokenizer: unexpected error");
    }
    return nullptr;
}

extern "C" void tok_free(struct tok *t) { delete t; }

// ---- vocabulary accessors ---------------------------------------------------------------------------------

extern "C" int tok_n_vocab(const struct tok *t) { return t ? static_cast<int>(t->pieces.size()) : 0; }
extern "C" int tok_bos(const struct tok *t) { return t ? t->bos : -1; }
extern "C" int tok_eos(const struct tok *t) { return t ? t->eos : -1; }
extern "C" int tok_unk(const struct tok *t) { return t ? t->unk : -1; }
extern "C" int tok_drops_lead_space(const struct tok *t) { return t && t->drop_lead; }

static bool valid_id(const struct tok *t, int id) {
    return t && id >= 0 && static_cast<size_t>(id) < t->pieces.size();
}

extern "C" int tok_type(const struct tok *t, int id) {
    return valid_id(t, id) ? t->types[static_cast<size_t>(id)] : 0;
}

extern "C" const char *tok_piece(const struct tok *t, int id) {
    return valid_id(t, id) ? t->pieces[static_cast<size_t>(id)].c_str() : "";
}

extern "C" float tok_score(const struct tok *t, int id) {
    return valid_id(t, id) ? t->scores[static_cast<size_t>(id)] : 0.0f;
}

extern "C" int tok_piece_to_id(const struct tok *t, const char *piece) {
    if (!t || !piece) return -1;
    try {
        int id = t->sp.PieceToId(piece);
        // SentencePiece answers unk_id for unknown text; a private duplicate name never matches `pieces`.
        return valid_id(t, id) && t->pieces[static_cast<size_t>(id)] == piece ? id : -1;
    } catch (...) {
        return -1;
    }
}

// ---- encoding ---------------------------------------------------------------------------------------------

extern "C" int tok_encode(const struct tok *t, const char *text, int32_t *ids, int cap) {
    if (!t || !text) return -1;
    try {
        std::vector<int> out;
        if (!encode_into(*t, text, out)) return -1;
        return copy_ids(out, ids, cap);
    } catch (...) {
        return -1;
    }
}

// Splits the text at the longest control/unknown piece spelled at each position (leftmost first). Each raw
// segment between them is encoded on its own, exactly as tok_encode would encode it, so a model with
// add_space_prefix gives every segment its dummy prefix: "<s>[INST]" -> <s> "▁[INST]". That is what Meta's
// Llama 2 chat code produces (each turn encoded separately) and what llama.cpp does since mid-2024
// (llama-vocab.cpp: `is_prev_special`). Gemma adds no prefix, so there the question does not arise.
// User-defined pieces need no splitting: SentencePiece itself always matches them inside a segment.
extern "C" int tok_encode_special(const struct tok *t, const char *text, int32_t *ids, int cap) {
    if (!t || !text) return -1;
    try {
        std::string_view s(text);
        std::vector<int> out;
        size_t seg = 0, i = 0;
        while (i < s.size()) {
            int hit = -1;
            size_t hit_len = 0;
            if (t->special_first[static_cast<unsigned char>(s[i])]) {
                size_t max = std::min(t->special_max, s.size() - i);
                for (size_t len = max; len > 0 && hit < 0; len--) {
                    auto it = t->special.find(s.substr(i, len));
                    if (it != t->special.end()) {
                        hit = it->second;
                        hit_len = len;
                    }
                }
            }
            if (hit < 0) {
                i++;
                continue;
            }
            if (!encode_into(*t, s.substr(seg, i - seg), out)) return -1;
            out.push_back(hit);
            i += hit_len;
            seg = i;
        }
        if (!encode_into(*t, s.substr(seg), out)) return -1;
        return copy_ids(out, ids, cap);
    } catch (...) {
        return -1;
    }
}
