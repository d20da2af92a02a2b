#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/fuzz_gguf.c into fuzz/corpus/gguf/.

Small valid GGUF files (each well under 20 KB) that together cover every
metadata value type, nested arrays, v2 and v3, custom alignment, split keys,
vocab-shaped arrays and plain, block and K-quant tensor types. Run from the
repository root: python3 tests/gguf/gen_fuzz_corpus.py
"""
import os
import struct

OUT = "fuzz/corpus/gguf"

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type id -> (block size, bytes per block)
DTYPE = {0: (1, 4), 1: (1, 2), 8: (32, 34), 12: (256, 144)}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for it in items:
            out += value(et, it)
        return out
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors, version=3, align=32):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    off = 0
    blobs = []
    for name, typ, ne in tensors:
        bs, ts = DTYPE[typ]
        n = 1
        for d in ne[1:]:
            n *= d
        size = ne[0] // bs * ts * n
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", typ, off)
        blobs.append((off, bytes((i * 37 + len(name)) & 0xFF for i in range(size))))
        off += (size + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    base = len(out)
    for o, blob in blobs:
        out += b"\0" * (base + o - len(out)) + blob
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {}
    seeds["all_types.gguf"] = gguf([
        ("general.architecture", STR, "llama"),
        ("u8", U8, 200), ("i8", I8, -3), ("u16", U16, 60000), ("i16", I16, -300),
        ("u32", U32, 4000000000), ("i32", I32, -7), ("f32", F32, 1.5), ("bool", BOOL, 1),
        ("u64", U64, 2**63), ("i64", I64, -2**40), ("f64", F64, 2.5e-300),
        ("str", STR, "hello\nworld"),
        ("a.u32", ARR, (U32, [1, 2, 3])), ("a.bool", ARR, (BOOL, [0, 1])),
        ("a.str", ARR, (STR, ["a", "", "bcd"])),
        ("a.nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["x"]), (ARR, [(I16, [-1])])])),
    ], [("t.f32", 0, [8, 2]), ("t.f16", 1, [16]), ("t.q8", 8, [32, 2, 1, 2])])
    seeds["v2_align64.gguf"] = gguf([
        ("general.alignment", U32, 64), ("general.name", STR, "v2"),
    ], [("a", 0, [3]), ("b", 1, [5, 3])], version=2, align=64)
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(32)] + ["t%d" % i for i in range(29)]
    seeds["vocab.gguf"] = gguf([
        ("general.architecture", STR, "llama"),
        ("llama.block_count", U32, 1), ("llama.embedding_length", U32, 8),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, toks)),
        ("tokenizer.ggml.scores", ARR, (F32, [-float(i) for i in range(len(toks))])),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3] + [6] * 32 + [1] * 29)),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
    ], [("token_embd.weight", 0, [8, len(toks)]), ("output_norm.weight", 0, [8])])
    seeds["empty.gguf"] = gguf([], [])
    seeds["split1.gguf"] = gguf([
        ("split.no", U16, 0), ("split.count", U16, 1), ("split.tensors.count", I32, 1),
    ], [("w", 0, [4])])
    seeds["q4k.gguf"] = gguf([("general.file_type", U32, 15)], [("k", 12, [256, 2]), ("q", 8, [64])])
    for name, data in seeds.items():
        assert len(data) < 20000, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
