#!/usr/bin/python3
"""Writes the hand-made seed inputs of the libFuzzer targets (fuzz/corpus/<target>/seed_*).

Each target's input layout is described at the top of fuzz/<target>.cc; the seeds here are small
valid (and a few nearly valid) inputs of every shape, so that a short run starts deep in the
parsers. Run from the repository root: /usr/bin/python3 scripts/fuzz_seeds.py
"""
import base64
import gzip
import io
import json
import os
import struct

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def npy(arr):
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


# Geometries of fuzz/fuzz_util.h MakeGeometry: 0 tiny-moe (3 layers, E 8, top-2), 1 one leading
# dense layer (4 layers), 2 interleaved (5 layers, MoE at 1 and 3, E 6, top-3), 3 E 300, 4
# gpt-oss-20b (24 layers, E 32, top-4).
rng = np.random.default_rng(7)


def picks(tokens, layers, experts, k, dtype):
    out = np.zeros((tokens, layers, k), dtype=dtype)
    for t in range(tokens):
        for l in range(layers):
            out[t, l] = rng.choice(experts, size=k, replace=False)
    return out


tiny = picks(3, 3, 8, 2, np.uint8)
dense = picks(2, 4, 8, 2, np.int32)
inter = picks(2, 5, 6, 3, np.uint16)

# ---- payload_fuzz: [mode][geometry][payload] ----
put("payload", "b64", b"\x00\x00" + base64.b64encode(bytes(range(40))))
put("payload", "vllm_u1", b"\x01\x00" + bytes([0, 0, 0, 0, 0]) + tiny.tobytes())
put("payload", "sglang", b"\x02\x01" + bytes([0, 0]) + dense.astype("<i4").tobytes())
put("payload", "list", b"\x03\x00" + json.dumps(tiny.tolist()).encode())
rows = tiny.astype(int).tolist()
rows[0] = [[-1, -1]] * 3
put("payload", "prompt_list", b"\x04\x00" + json.dumps(rows).encode())
put("payload", "prompt_list_inter", b"\x04\x02" + json.dumps(inter.astype(int).tolist()).encode())
sig = rng.integers(0, 50, size=(3, 8)).astype("<i2")
put("payload", "eldr_sig", b"\x05\x00" + b"\x00" + sig.tobytes())

# ---- npy_fuzz: raw .npy ----
put("npy", "tiny_u1", npy(tiny))
put("npy", "dense_i4", npy(dense))
put("npy", "inter_u2", npy(inter))
put("npy", "v2", npy(tiny)[:6] + b"\x02\x00" + struct.pack("<I", 118) + npy(tiny)[10:128] + tiny.tobytes())

# ---- prefill_fuzz: [body][geometry][pin][prompt][start] ----
def knobs(geom, pin=7, prompt=None, start=0):
    return bytes([geom, pin, 0 if prompt is None else 128 + prompt, start])


b64 = base64.b64encode(npy(tiny)).decode()
put("prefill", "vllm", json.dumps({"choices": [{"index": 0, "text": "x", "routed_experts": b64,
                                                "prompt_token_ids": [5, 6, 7]}],
                                    "kv_transfer_params": {"remote_engine_id": "e", "remote_block_ids": [1]}})
    + knobs(0).decode("latin1"))
put("prefill", "vllm_list", json.dumps({"choices": [{"index": 0, "routed_experts": tiny.tolist()}],
                                        "usage": {"prompt_tokens": 3}}) + knobs(0, prompt=3).decode("latin1"))
put("prefill", "vllm021", json.dumps({"choices": [{"index": 0, "routed_experts": []}],
                                      "usage": {"prompt_tokens": 3},
                                      "prompt_routed_experts": rows}) + knobs(0).decode("latin1"))
put("prefill", "sglang", json.dumps({"choices": [{"index": 0, "text": "x"}], "usage": {"prompt_tokens": 2},
                                     "sglext": {"routed_experts": base64.b64encode(dense.astype("<i4").tobytes()).decode()}})
    + knobs(1).decode("latin1"))
put("prefill", "eldr_sig", json.dumps({"choices": [{"index": 0, "text": "x"}],
                                       "kv_transfer_params": {"eldr_sig": base64.b64encode(sig.tobytes()).decode(),
                                                              "remote_engine_id": "e"}})
    + knobs(0, pin=5).decode("latin1"))
put("prefill", "error", '{"error":{"message":"bad","type":"x","code":400}}' + knobs(0).decode("latin1"))

# ---- http_fuzz: [mode][3 piece sizes][bytes] ----
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer secret\r\n"
       b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"stream\":1}\n")
put("http", "request", b"\x00\x05\x11\x02" + req)
put("http", "request_chunked", b"\x00\x03\x07\x00" + b"POST /v1/completions HTTP/1.1\r\nHost: r\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
put("http", "request_10", b"\x00\x01\x01\x01" + b"GET /health HTTP/1.0\r\n\r\n")
sse = (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
       b'data: {"choices":[],"usage":{"completion_tokens": 7}}\n\ndata: [DONE]\n\n')
chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in sse.split(b"\n\n") if p) + b"0\r\n\r\n"
put("http", "response_chunked", b"\x01\x09\x21\x05" + b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
put("http", "response_length", b"\x01\x03\x00\x00" + b"HTTP/1.1 400 Bad Request\r\nContent-Length: 17\r\n\r\n"
    b'{"error":"bad"}\n\n')
put("http", "response_eof", b"\x01\x02\x04\x06" + b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + sse)
put("http", "counter", b"\x02\x0b\x17\x03" + sse)

# ---- client_fuzz: a client body ----
put("client", "completions", json.dumps({"model": "m", "prompt": "hello world", "max_tokens": 8,
                                         "stream": True, "stream_options": {"include_usage": True}}))
put("client", "tokens", json.dumps({"model": "m", "prompt": [1, 2, 3, 4], "n": 1, "min_tokens": 2}))
put("client", "chat", json.dumps({"model": "m", "messages": [
    {"role": "system", "content": "s"},
    {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_completion_tokens": 4}))

# ---- config_fuzz: a config (YAML / JSON), a URL, a config.json ----
put("config", "yaml", "listen: 127.0.0.1:8000\nprefill: [http://p:8100]\n"
    "decode:\n  - url: http://d:8200\n    dp_rank: 0\n  - http://[::1]:8201\npolicy: eldr\n"
    "capture: /tmp/c.gz\ncapture_fraction: 0.5\n")
put("config", "json", json.dumps({"prefill": ["http://p:1"], "decode": ["http://d:2"], "policy": "p2c"}))
put("config", "url", "http://[::1]:8000/")
put("config", "hf", json.dumps({"architectures": ["Qwen3MoeForCausalLM"], "num_hidden_layers": 4,
                                "num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 64,
                                "moe_intermediate_size": 32, "decoder_sparse_step": 1,
                                "mlp_only_layers": [0]}))

# ---- gzip_fuzz: [split][level][bytes] ----
put("gzip", "text", b"\x80\x05" + gzip.compress(b"one line\n" * 8))
put("gzip", "members", b"\x40\x01" + gzip.compress(b"a\n") + gzip.compress(b"bc\n"))
put("gzip", "torn", b"\x10\x09" + gzip.compress(b"abc" * 30)[:-5])

# ---- trace_fuzz: an eldr.trace file (gpt-oss-20b: 24 layers x top-4 of 32) ----
def trace(reqs, id_bytes=1, prefix=2):
    h = json.dumps({"format": "eldr.trace", "version": 1, "model": "gpt-oss-20b", "source": "seed",
                    "prefix_tokens": prefix, "requests": len(reqs), "id_bytes": id_bytes},
                   separators=(",", ":")).encode()
    out = b"ELDRTRC1" + struct.pack("<I", len(h)) + h
    for label, prompt, p in reqs:
        out += struct.pack("<H", len(label)) + label + struct.pack("<II", prompt, p.shape[0])
        out += p.astype("<u1" if id_bytes == 1 else "<u2").tobytes()
    return out


put("trace", "two", trace([(b"code", 40, picks(2, 24, 32, 4, np.uint8)),
                           (b"", 3, picks(1, 24, 32, 4, np.uint8))]))
put("trace", "wide", trace([(b"math", 9, picks(1, 24, 32, 4, np.uint16))], id_bytes=2))
# A model that is no preset, described in the header (2 MoE layers at hidden layers 1 and 3,
# 16 experts, top-2), as eldr writes it for a model read from its config.json.
MY_MOE = {"name": "my-moe", "display_name": "My_MoE", "total_layers": 4, "first_moe_layer": 1,
          "moe_layers": 2, "experts": 16, "top_k": 2, "shared_experts": 0, "hidden_size": 256,
          "expert_intermediate": 128, "bytes_per_param": 1.0, "kv_block_size": 16,
          "moe_layer_ids": [1, 3]}
h = json.dumps({"format": "eldr.trace", "version": 1, "model": "my-moe", "geometry": MY_MOE,
                "source": "seed", "prefix_tokens": 1, "requests": 1, "id_bytes": 1},
               separators=(",", ":")).encode()
put("trace", "described_model", b"ELDRTRC1" + struct.pack("<I", len(h)) + h + struct.pack("<H", 4) +
    b"code" + struct.pack("<II", 5, 2) + bytes(range(8)))

# ---- calibration_fuzz: [0][file] or [1][record knobs] ----
mix = "mixtral-8x7b"  # 32 layers x 8 experts
row = [[1] * 8 for _ in range(32)]
lines = [json.dumps({"format": "eldr.calibration", "version": 1, "model": mix}),
         json.dumps({"id": "r1", "label": "code", "prefill": row, "decode": row, "prompt_tokens": 5,
                     "output_tokens": 2, "arrival_us": 1, "decoder": "http://d:1"})]
text = ("\n".join(lines) + "\n").encode()
put("calibration", "jsonl", b"\x00" + text)
put("calibration", "capture_gz", b"\x00" + gzip.compress(text) + gzip.compress(text)[:20])
put("calibration", "record", b"\x01" + bytes(range(1, 200)))
hot = [[3 if e == 5 else 0 for e in range(16)] for _ in range(2)]
put("calibration", "described_model", b"\x00" + (json.dumps(
    {"format": "eldr.calibration", "version": 1, "model": "my-moe", "geometry": MY_MOE}) + "\n" +
    json.dumps({"id": "a", "label": "code", "prefill": hot, "prompt_tokens": 3,
                "output_tokens": 2, "arrival_us": 1, "decoder": "d"}) + "\n").encode())
