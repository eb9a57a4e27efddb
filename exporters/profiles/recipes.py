"""What each lighter profile does to each graph, and why (plan.md §15): one declarative recipe per profile.

The fp32 export stays the master; a profile is derived from it graph by graph with ONNX Runtime's own tools
(``onnxruntime.transformers.float16.convert_float_to_float16``, ``onnxruntime.quantization.quantize_dynamic`` /
``quantize_static``). A graph a profile does not transform is copied byte for byte from the fp32 folder, with
the reason. The reasons for the DiT / VAE / LM choices are measured figures, recorded in the profile manifest
and in docs/onnx_quantization.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROFILE_NAMES = ("fp16", "int8_dynamic", "int8_static")

# Ops kept in fp32 by the fp16 conversion (on top of ORT's own DEFAULT_OP_BLOCK_LIST): the reductions and the
# elementwise maths of RMSNorm / LayerNorm (x**2 overflows fp16 above 256, its mean loses the low bits), the
# softmax of attention (and ORT's fused MultiHeadAttention of the full-attention layers, which holds one), and the
# transcendental functions of the timestep embedding and the VAE's Snake
# activation (sin(alpha*x)**2 / beta). The matmuls and convolutions, where the time and the bytes are, run in
# fp16; casts sit at the borders of each blocked region (inserted by the converter).
FP16_NUMERIC_BLOCK_LIST = (
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow", "Sqrt", "Reciprocal", "Div", "Softmax",
    "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization", "SkipLayerNormalization",
    "Exp", "Log", "Sin", "Cos", "Erf", "Tanh", "Sigmoid", "CumSum", "Range", "RotaryEmbedding", "MultiHeadAttention",
)


@dataclass(frozen=True)
class GraphRecipe:
    """How one graph is derived in one profile. ``method`` is ``copy`` (the fp32 graph unchanged), ``fp16``,
    ``int8_dynamic`` or ``int8_static``; ``settings`` are the tool's keyword arguments (recorded verbatim)."""

    method: str
    reason: str
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"method": self.method, "settings": dict(self.settings), "reason": self.reason}


_ONCE = ("runs once per song on a few hundred tokens, against the DiT's 8+ calls on the whole latent; a lighter copy "
         "would change the conditioning every DiT step reads, for little time saved")
_EMBED = "a single embedding lookup (Gather): nothing to compute in lower precision"

_FP16 = {"keep_io_types": True, "op_block_list": "ORT DEFAULT_OP_BLOCK_LIST + FP16_NUMERIC_BLOCK_LIST"}
# reduce_range (7-bit weights): ORT's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512F) add pairs of
# products in int16 (vpmaddubsw) and saturate with full-range weights. Measured on the tiny DiT (AMD EPYC, AVX2),
# worst per-call vt SNR against fp32: s8 per-channel 18.2 dB, s8 per-tensor 29.6 dB, s8 per-channel + reduce_range
# 32.7 dB, u8 weights 38.5 dB (but u8 x u8 has no fast kernel: 1.8x the s8 time). reduce_range keeps the fast
# kernel and gives the same numbers on VNNI and non-VNNI CPUs (ORT's documented remedy).
_DYN_MATMUL = {"op_types_to_quantize": ["MatMul", "Gemm"], "weight_type": "QInt8", "per_channel": True,
               "reduce_range": True, "extra_options": {"MatMulConstBOnly": True}}
# The DiT: u8 weights (u8 x u8 integer products widened to 16 bits before they are added: no saturation, full 8-bit
# weights, the same integers on every x86 CPU). Measured at real width (wide preset, T = 750, one 30 s case, AMD
# EPYC AVX2, one process), against the fp32 DiT: s8 per channel + reduce_range: vt SNR 32.3 dB, audio SNR 30.8 dB,
# 0.64x the fp32 time; s8 per tensor, full range: 33.5 dB / 31.9 dB / 0.58x (but saturates on CPUs without VNNI);
# u8 per channel: 37.2 dB / 35.3 dB / 0.67x. On the tiny DiT the u8 x u8 kernel is slower than fp32 (its matmuls
# are 64 wide), which the tiny model's speed never meant anything for.
# The LM too: with s8 + reduce_range its greedy plan of simple_mode_04 changed (the prompt it hands to text2music
# differed by a token from torch's); with u8 weights all five plans equal torch's. Wide lm_decode at 300 past
# tokens: s8 0.67x the fp32 time at 29.9 dB logits SNR, u8 0.78x at 32.5 dB (machine shared with a test run).
_DYN_MATMUL_U8 = {**_DYN_MATMUL, "weight_type": "QUInt8", "reduce_range": False}
_STATIC_MATMUL = {"quant_format": "QDQ", "op_types_to_quantize": ["MatMul", "Gemm"], "activation_type": "QUInt8",
                  "weight_type": "QInt8", "per_channel": True, "reduce_range": True, "calibrate_method": "MinMax",
                  "extra_options": {"MatMulConstBOnly": True}}

RECIPES: dict[str, dict[str, GraphRecipe]] = {
    "fp16": {
        "text_encoder": GraphRecipe("copy", _ONCE),
        "lyric_embedding": GraphRecipe("copy", _EMBED),
        "condition_encoder": GraphRecipe("copy", _ONCE),
        "dit_decoder": GraphRecipe("fp16", "weights and matmuls in fp16 halve the size; normalization, softmax and "
                                   "the timestep embedding's transcendental ops stay fp32", _FP16),
        "vae_decoder": GraphRecipe("fp16", "convolutions in fp16 halve the size; the Snake activation's sin/pow "
                                   "and divisions stay fp32", _FP16),
        "lm_prefill": GraphRecipe("fp16", "weights and matmuls in fp16; RMSNorm, softmax and rotary stay fp32",
                                  _FP16),
        "lm_decode": GraphRecipe("fp16", "weights and matmuls in fp16; RMSNorm, softmax and rotary stay fp32",
                                 _FP16),
    },
    "int8_dynamic": {
        "text_encoder": GraphRecipe("copy", _ONCE),
        "lyric_embedding": GraphRecipe("copy", _EMBED),
        "condition_encoder": GraphRecipe("copy", _ONCE),
        "dit_decoder": GraphRecipe("int8_dynamic", "the DiT's time is in its linear layers: 8-bit MatMul weights "
                                   "(u8, per channel), activations quantized per call", _DYN_MATMUL_U8),
        "vae_decoder": GraphRecipe("copy", "not offered: ORT's dynamic quantization has no ConvTranspose (the "
                                   "VAE's upsampling layers), its CPU ConvInteger takes u8 weights only, and that "
                                   "measured 4.9x slower than fp32 at audio SNR 22.6 dB (tiny VAE, one tile); "
                                   "see docs/onnx_quantization.md"),
        "lm_prefill": GraphRecipe("int8_dynamic", "the LM is a stack of linear layers: the standard int8 MatMul "
                                  "recipe for transformers on CPU", _DYN_MATMUL_U8),
        "lm_decode": GraphRecipe("int8_dynamic", "the LM is a stack of linear layers: the standard int8 MatMul "
                                 "recipe for transformers on CPU", _DYN_MATMUL_U8),
    },
    "int8_static": {
        "text_encoder": GraphRecipe("copy", _ONCE),
        "lyric_embedding": GraphRecipe("copy", _EMBED),
        "condition_encoder": GraphRecipe("copy", _ONCE),
        "dit_decoder": GraphRecipe("int8_static", "int8 MatMul with activation ranges calibrated on the cases' "
                                   "own DiT inputs (QDQ)", _STATIC_MATMUL),
        "vae_decoder": GraphRecipe("copy", "not offered: calibrated int8 Conv/ConvTranspose (QDQ) measured audio "
                                   "SNR 13-14 dB against fp32 (tiny VAE, one tile; the Snake activations' range "
                                   "does not survive 8 bits); see docs/onnx_quantization.md"),
        "lm_prefill": GraphRecipe("copy", "not offered: the planner's KV-cache activations change range with the "
                                  "prompt; int8_dynamic covers the LM without calibration"),
        "lm_decode": GraphRecipe("copy", "not offered: the planner's KV-cache activations change range with the "
                                 "prompt; int8_dynamic covers the LM without calibration"),
    },
}
