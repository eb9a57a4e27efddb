"""The fp32 roofline: FLOPs of each stage at the model's real dimensions, and this machine's SGEMM rate.

A stage's floor is its multiply-add FLOPs divided by the SGEMM rate measured in the same run (2048^3 fp32, numpy's
BLAS and ONNX Runtime's MLAS); the benchmarks and ``scripts/realsize_timing.py`` report time / floor. Norms,
activations, softmax and RoPE are ignored (they are not SGEMM work), so a ratio of 1.0 is unreachable and 1.2-1.5
is good.
"""

from __future__ import annotations

import time

import numpy as np

ENC_LEN = 300  # condition-encoder output length: text + lyrics + timbre tokens of a typical request


def dit_step_flops(cfg: dict, frames: int, enc_len: int = ENC_LEN, batch: int = 1) -> float:
    """Multiply-add FLOPs (2 per MAC) of one DiT evaluation: per layer self-attention (projections, scores and
    weighted sum; sliding layers see at most 2*window+1 keys), cross-attention over ``enc_len`` tokens and the
    gated MLP, on ``frames / patch`` tokens; the patch in/out projections. Norms, RoPE and softmax are ignored
    (they are not SGEMM work)."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    patch = cfg.get("patch_size", 2)
    tokens = -(-frames // patch)
    layers = cfg["num_hidden_layers"]
    types = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    window = cfg.get("sliding_window", 128)
    macs = 0
    for kind in types[:layers]:
        keys = tokens if kind == "full_attention" else min(tokens, 2 * window + 1)
        macs += tokens * hidden * (heads + 2 * kv) * hd + tokens * heads * hd * hidden  # self q,k,v,o
        macs += 2 * tokens * keys * heads * hd  # scores + weighted sum
        macs += tokens * hidden * heads * hd * 2 + enc_len * hidden * kv * hd * 2  # cross q,o and k,v
        macs += 2 * tokens * enc_len * heads * hd
        macs += 3 * tokens * hidden * inter  # gate, up, down
    in_ch = cfg.get("in_channels", 192)
    macs += tokens * patch * in_ch * hidden + tokens * hidden * patch * 64
    return 2.0 * macs * batch


def sgemm_rates(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n x n float32 matmul: numpy (its BLAS) and ONNX Runtime's MatMul (MLAS), best of
    ``repeats``, measured now (the roofline's denominator)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    flops = 2.0 * n ** 3
    rates = {}
    for name, call in (("numpy", lambda: a @ b), ("ort", lambda: session.run(None, {"a": a, "b": b}))):
        call()
        best = min(timed(call) for _ in range(repeats))
        rates[name] = flops / best / 1e9
    return rates


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def vae_decode_flops(cfg: dict, frames: int, latent_channels: int = 64, batch: int = 1) -> float:
    """Multiply-add FLOPs of the Oobleck decoder (diffusers' ``OobleckDecoder``) on ``frames`` latent frames:
    the input conv (k 7), per upsampling block a ConvTranspose1d (k = 2*stride) and three residual units (a k 7
    dilated conv and a k 1 conv at the block's output rate), and the output conv (k 7). 4.87 GFLOP per latent
    frame at the real widths (3.66 TFLOP for a 30 s song)."""
    channels = cfg["decoder_channels"]
    multiples = [1, *cfg["channel_multiples"]]
    strides = list(cfg["downsampling_ratios"])[::-1]
    audio = cfg.get("audio_channels", 2)
    macs = frames * latent_channels * channels * multiples[-1] * 7
    length = frames
    for i, stride in enumerate(strides):
        c_in = channels * multiples[len(strides) - i]
        c_out = channels * multiples[len(strides) - i - 1]
        macs += length * c_in * c_out * 2 * stride  # ConvTranspose1d: every input sample meets k taps
        length *= stride
        macs += 3 * length * (c_out * c_out * 7 + c_out * c_out)
    macs += length * channels * audio * 7
    return 2.0 * macs * batch


def transformer_flops(non_embedding_params: int, tokens: int) -> float:
    """2 FLOPs per weight per token: a decoder-only stack on short sequences (text encoder, LM prefill)."""
    return 2.0 * non_embedding_params * tokens
