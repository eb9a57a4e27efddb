"""The declarative I/O contract of every text2music ONNX graph, and every exporter / ORT setting, in ONE place.

One :class:`GraphSpec` per graph (Optimum style) drives everything that must agree with the graph: the export
(input/output names, ``dynamic_shapes``, dummy shapes), the manifest, ``docs/io_contract.md`` and the tests
(input generation, the shape grid, the contract checks). Nothing here imports torch: the ONNX Runtime backend
(``acestep_ort``) reads the contract without the reference extras installed.

Shapes are tuples of axis entries:

* a **dynamic axis** name from :data:`AXES` (``"B"``, ``"T"``, ``"T_text"``, ``"T_lyric"``, ``"T_enc"``),
  exported as an ONNX ``dim_param`` of the same name;
* a **derived** dynamic axis, an expression over dynamic axes with ``+`` and ``*`` (``"T_lyric+1+T_text"``,
  ``"1920*T"``), only on outputs; its value is checked on every grid shape;
* a **config dim** name from :data:`CONFIG_DIMS` (``"D_text"``, ``"H"``): fixed per checkpoint, an ONNX
  ``dim_value`` read from the checkpoint configs;
* an ``int``: fixed by the model family (64 latent channels, 750 timbre frames, 2 audio channels).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

# --------------------------------------------------------------------------------------------- settings


def _jsonable(value):
    """Tuples as lists, recursively: what a JSON round trip gives, so manifests compare equal to settings."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


OPSET = 18
"""ONNX default-domain opset of every graph. 18 is what the torch 2.10 dynamo exporter emits natively (no
version-converter pass) and what onnxruntime 1.23 and the Rust ``ort`` crate (ORT >= 1.16) run."""


@dataclass(frozen=True)
class ExporterSettings:
    """Everything that decides the bytes of an exported graph (part of the cache key of the artifacts)."""

    exporter: str = "torch.onnx.export(dynamo=True)"
    opset: int = OPSET
    # onnxscript's optimizer (constant folding, dead code). It folds with numpy, whose transcendental functions
    # can differ from torch's by an ulp: see the DiT timestep-frequency workaround in exporters/dit_decoder.py.
    optimize: bool = True
    # Above this many initializer bytes a graph is written with external data (protobuf's hard limit is 2 GiB;
    # torch uses the same 1.5 GiB margin). Tests force a tiny value to exercise the path on the tiny model.
    external_data_threshold_bytes: int = 1536 * 1024 * 1024
    # With external data, tensors smaller than this stay inline (onnx_ir default 256 B; 1 KiB keeps scalars,
    # norm weights of the tiny model and shape constants readable inside the .onnx file).
    external_tensor_min_bytes: int = 1024
    # Node metadata dropped after export: source file/line stack traces and FX node reprs. They depend on the
    # checkout location and line numbers, so they would make the SHA-256 differ between two clones; the
    # module scopes (``pkg.torch.onnx.name_scopes``) stay, the first-divergence diagnostic uses them.
    stripped_node_metadata: tuple[str, ...] = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")
    stripped_graph_metadata: tuple[str, ...] = ("pkg.torch.export.ExportedProgram.graph_signature",
                                                "pkg.torch.export.ExportedProgram.range_constraints")
    dummy_seed: int = 0

    def to_json(self) -> dict:
        return _jsonable(asdict(self))


EXPORTER = ExporterSettings()


@dataclass(frozen=True)
class OrtSettings:
    """ONNX Runtime session options of every parity test (and recorded in the manifest).

    One thread each: results are independent of the core count and the tests can run under pytest-xdist.
    ``ORT_ENABLE_BASIC`` (constant folding, redundant-node removal, no op fusion) is what Optimum validates
    exports with; the fused kernels of ``ORT_ENABLE_ALL`` are a runtime choice, measured by its own tests.
    """

    intra_op_num_threads: int = 1
    inter_op_num_threads: int = 1
    graph_optimization_level: str = "ORT_ENABLE_BASIC"
    execution_mode: str = "ORT_SEQUENTIAL"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def to_json(self) -> dict:
        return _jsonable(asdict(self))


ORT = OrtSettings()

# ------------------------------------------------------------------------------------------------- axes


@dataclass(frozen=True)
class Axis:
    """A dynamic axis: its ``torch.export.Dim`` range and what it means."""

    name: str
    description: str
    min: int = 1
    max: int = 65536


AXES: dict[str, Axis] = {a.name: a for a in (
    Axis("B", "batch items", 1, 1024),
    Axis("T", "25 Hz latent frames (any length, odd included)", 1, 65536),
    Axis("T_text", "caption tokens (host truncates to 256)", 1, 8192),
    Axis("T_lyric", "lyric tokens (host truncates to 2048)", 1, 16384),
    Axis("T_enc", "packed condition tokens (= T_lyric + 1 + T_text from the condition encoder)", 1, 32768),
    Axis("T_lm", "5 Hz LM tokens fed in one call (the prompt in lm_prefill; 1 per step in lm_decode)", 1, 8192),
    Axis("P_lm", "5 Hz LM positions already in the KV cache (prompt + generated so far)", 1, 8192),
)}

CONFIG_DIMS: dict[str, str] = {
    "D_text": "text encoder hidden size (Qwen3 config hidden_size; 1024 for Qwen3-Embedding-0.6B)",
    "H": "DiT / condition-encoder hidden size (acestep config hidden_size; 2048 for turbo)",
    "V_text": "text vocabulary size (Qwen3 config vocab_size); ids must be in [0, V_text)",
    "V_lm": "5 Hz LM vocabulary size (= len(tokenizer), audio-code tokens included); ids must be in [0, V_lm)",
    "L_lm": "5 Hz LM decoder layers (num_hidden_layers; 28 for the 0.6B)",
    "KV_lm": "5 Hz LM key/value heads (num_key_value_heads; 8 for the 0.6B)",
    "Dh_lm": "5 Hz LM head dim (head_dim; 128 for the 0.6B)",
}
LM_CONFIG_DIMS = ("V_lm", "L_lm", "KV_lm", "Dh_lm")


def config_dims(dit_config: Mapping, text_config: Mapping, lm_config: Mapping | None = None) -> dict[str, int]:
    """Resolve :data:`CONFIG_DIMS` from the checkpoint configs (the LM ones only when an LM config is given)."""
    hidden = int(dit_config["hidden_size"])
    encoder_hidden = dit_config.get("encoder_hidden_size") or hidden
    if int(encoder_hidden) != hidden:
        raise ValueError(f"encoder_hidden_size {encoder_hidden} != hidden_size {hidden}: the text2music contract "
                         "feeds the condition encoder output straight into the DiT")
    dims = {"D_text": int(text_config["hidden_size"]), "H": hidden, "V_text": int(text_config["vocab_size"])}
    if lm_config is not None:
        dims.update({"V_lm": int(lm_config["vocab_size"]), "L_lm": int(lm_config["num_hidden_layers"]),
                     "KV_lm": int(lm_config["num_key_value_heads"]),
                     "Dh_lm": int(lm_config.get("head_dim") or lm_config["hidden_size"] // lm_config[
                         "num_attention_heads"])})
    return dims


_OPS = {ast.Add: operator.add, ast.Mult: operator.mul}


def eval_axis(expr: str | int, sizes: Mapping[str, int]) -> int:
    """Value of an axis entry (int, name or ``+``/``*`` expression) for concrete ``sizes``."""
    if isinstance(expr, int):
        return expr

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in sizes:
                raise KeyError(f"axis {node.id!r} of {expr!r} has no size in {dict(sizes)}")
            return int(sizes[node.id])
        raise ValueError(f"unsupported axis expression {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


def is_dynamic(entry: str | int) -> bool:
    """Whether an axis entry is symbolic in the graph (a dynamic axis or an expression over them)."""
    return isinstance(entry, str) and entry not in CONFIG_DIMS


# ---------------------------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    ``kind`` says how test and dummy values are generated: ``ids`` (uniform in [0, V_text)), ``mask``
    (right-padded 0/1), ``timestep`` (in [0, 1]), ``latent`` (standard normal), ``timbre`` / ``context``
    (the host's silence-latent tensors), ``hidden`` (standard normal activations).
    """

    name: str
    dtype: str  # numpy dtype name: float32 | int64 | bool
    shape: tuple[str | int, ...]
    description: str
    kind: str = "hidden"

    def resolved_shape(self, dims: Mapping[str, int]) -> list[str | int]:
        """Shape as the ONNX graph declares it: dynamic entries stay symbolic, config dims become ints."""
        return [dims[e] if isinstance(e, str) and e in CONFIG_DIMS else e for e in self.shape]

    def concrete_shape(self, sizes: Mapping[str, int], dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(eval_axis(e, {**dims, **sizes}) for e in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph: its file, module, I/O contract, export (dummy) sizes and the workarounds it needs."""

    name: str
    module: str  # acestep_parity.exporters.<module> provides build(models) -> nn.Module
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    export_sizes: dict[str, int]  # the dummy shapes the graph is traced with (the test grid avoids them)
    reference: str  # the PyTorch call the graph is validated against
    modules: tuple[str, ...]  # the ReferenceModels fields the wrapper reads (export frees the others early)
    workarounds: tuple[str, ...] = field(default_factory=tuple)
    axis_limits: dict[str, tuple[int, int]] = field(default_factory=dict)  # per-graph (min, max) over AXES
    trace_cost: float = 1.0  # relative tracing time, to balance parallel exports (measured on the tiny preset)

    def axis_range(self, name: str) -> tuple[int, int]:
        """The ``torch.export.Dim`` range of a dynamic axis in this graph."""
        if name in self.axis_limits:
            return self.axis_limits[name]
        return AXES[name].min, AXES[name].max

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def dynamic_axes(self) -> list[str]:
        """Dynamic axes the inputs declare, in first-seen order."""
        seen: list[str] = []
        for t in self.inputs:
            for e in t.shape:
                if isinstance(e, str) and e in AXES and e not in seen:
                    seen.append(e)
        return seen

    def tensor(self, name: str) -> TensorSpec:
        for t in (*self.inputs, *self.outputs):
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no tensor {name!r}")

    def io_json(self, dims: Mapping[str, int]) -> dict:
        """The manifest's view of the I/O: name, dtype, resolved shape (symbolic axes kept)."""

        def one(t: TensorSpec) -> dict:
            return {"name": t.name, "dtype": t.dtype, "shape": t.resolved_shape(dims)}

        return {"inputs": [one(t) for t in self.inputs], "outputs": [one(t) for t in self.outputs]}


# ----------------------------------------------------------------------------------------------- graphs

TEXT_ENCODER = GraphSpec(
    name="text_encoder",
    module="text_encoder",
    description="Qwen3Model (Qwen3-Embedding-0.6B) last_hidden_state of the caption prompt, no attention mask",
    inputs=(TensorSpec("input_ids", "int64", ("B", "T_text"),
                       "caption token ids, right-padded with the pad id <|endoftext|>", "ids"),),
    outputs=(TensorSpec("text_hidden_states", "float32", ("B", "T_text", "D_text"),
                        "final-norm hidden states (causal attention, so right padding never reaches valid tokens)"),),
    export_sizes={"B": 2, "T_text": 23},
    reference="Qwen3Model(input_ids=ids).last_hidden_state (sdpa, no attention_mask: upstream passes none)",
    modules=("text_encoder",),
    trace_cost=6.0,
    workarounds=(),
)

LYRIC_EMBEDDING = GraphSpec(
    name="lyric_embedding",
    module="lyric_embedding",
    description="token-embedding lookup of the lyric prompt (Gather on Qwen3 embed_tokens); no transformer",
    inputs=(TensorSpec("input_ids", "int64", ("B", "T_lyric"),
                       "lyric token ids, right-padded with the pad id <|endoftext|>", "ids"),),
    outputs=(TensorSpec("lyric_hidden_states", "float32", ("B", "T_lyric", "D_text"), "embed_tokens rows"),),
    export_sizes={"B": 2, "T_lyric": 37},
    reference="Qwen3Model.embed_tokens(ids)",
    modules=("text_encoder",),
    trace_cost=1.0,
)

CONDITION_ENCODER = GraphSpec(
    name="condition_encoder",
    module="condition_encoder",
    description=("AceStepConditionEncoder: text projector, lyric encoder, timbre encoder and the packing of "
                 "[lyric | timbre | text] with valid tokens first"),
    inputs=(
        TensorSpec("text_hidden_states", "float32", ("B", "T_text", "D_text"), "text_encoder output"),
        TensorSpec("text_attention_mask", "int64", ("B", "T_text"), "1 = valid caption token, 0 = padding",
                   "mask"),
        TensorSpec("lyric_hidden_states", "float32", ("B", "T_lyric", "D_text"), "lyric_embedding output"),
        TensorSpec("lyric_attention_mask", "int64", ("B", "T_lyric"), "1 = valid lyric token, 0 = padding", "mask"),
        TensorSpec("timbre_reference", "float32", ("B", 750, 64),
                   "one timbre reference per item (text2music: silence_latent[:750]); the order mask is "
                   "implicitly arange(B)", "timbre"),
    ),
    outputs=(
        TensorSpec("encoder_hidden_states", "float32", ("B", "T_lyric+1+T_text", "H"),
                   "packed condition: valid lyric, timbre, valid text, then padded lyric, padded text"),
        TensorSpec("encoder_attention_mask", "bool", ("B", "T_lyric+1+T_text"),
                   "true for the first (valid lyric + 1 + valid text) positions"),
    ),
    export_sizes={"B": 2, "T_text": 23, "T_lyric": 37},
    reference=("AceStepConditionEncoder(text, text_mask.long(), lyric, lyric_mask.long(), timbre_reference, "
               "refer_audio_order_mask=arange(B))"),
    modules=("condition_encoder",),
    trace_cost=8.0,
    workarounds=(
        "timbre unpacking (bincount + .item() + one-hot) replaced by 'one reference per item': the pooled "
        "timbre row b is item b's single timbre token, mask 1 (exact for the text2music order mask arange(B))",
        "two stable-argsort packs replaced by one cumsum rank -> ScatterElements -> GatherElements permutation "
        "over [lyric | timbre | text] (a stable partition of 0/1 masks; identical ordering, verified on padded "
        "and unpadded batches)",
    ),
)

DIT_DECODER = GraphSpec(
    name="dit_decoder",
    module="dit_decoder",
    description="AceStepTransformer1DModel: one flow-velocity evaluation (turbo DiT, no masks inside)",
    inputs=(
        TensorSpec("hidden_states", "float32", ("B", "T", 64), "x_t, the noisy latent", "latent"),
        TensorSpec("timestep", "float32", ("B",), "t (schedule value in [0, 1])", "timestep"),
        TensorSpec("timestep_r", "float32", ("B",), "r (mean-flow reference; text2music passes r = t)",
                   "timestep"),
        TensorSpec("encoder_hidden_states", "float32", ("B", "T_enc", "H"), "condition_encoder output"),
        TensorSpec("context_latents", "float32", ("B", "T", 128),
                   "[source latents (64) | chunk mask (64)]; text2music: [silence[:T] | 1.0]", "context"),
    ),
    outputs=(TensorSpec("vt", "float32", ("B", "T", 64), "predicted flow velocity"),),
    export_sizes={"B": 2, "T": 46, "T_enc": 21},
    reference="AceStepTransformer1DModel(xt, t, r, enc, ctx, return_dict=False)[0] (native SDPA backend)",
    modules=("transformer",),
    trace_cost=15.0,
    workarounds=(
        "odd T: diffusers pads with a Python `if T % 2` (traced as a guard on T); the wrapper zero-pads "
        "hidden_states and context_latents by 2*ceil(T/2)-T frames first (shape arithmetic, no branch) and "
        "narrows the output back to T, so the internal branch is statically never taken",
    ),
)

VAE_DECODER = GraphSpec(
    name="vae_decoder",
    module="vae_decoder",
    description="AutoencoderOobleck decoder (Snake + weight-normed convs, weight norm folded), 1920x upsampling",
    inputs=(TensorSpec("latents", "float32", ("B", 64, "T"), "latents, channels first", "latent"),),
    outputs=(TensorSpec("audio", "float32", ("B", 2, "1920*T"), "stereo 48 kHz waveform, not clipped"),),
    export_sizes={"B": 2, "T": 12},
    reference="AutoencoderOobleck.decode(latents).sample (weight_norm hooks active)",
    modules=("vae",),
    trace_cost=9.0,
    workarounds=(
        "weight_norm folded with torch.nn.utils.remove_weight_norm on a copy before export (w = g*v/||v||; "
        "for ConvTranspose1d the norm is per input channel, dim 0 of [Cin, Cout, k], which remove_weight_norm "
        "takes from the hook), so the graph has plain Conv/ConvTranspose weights",
        "dynamic T needs an upper bound: torch.export guards that the widest activation "
        "[B, decoder_channels, 1920*T] stays within int32 indexing (T <= 8738 for the real 128-channel decoder, "
        "T <= 139810 for the tiny one); the graph declares T in 1..8192, which covers the host's 256-frame CPU "
        "tiles (and whole latents up to 5.5 minutes)",
    ),
    axis_limits={"T": (1, 8192)},
)

_LM_KV = ("L_lm", "B", "KV_lm")
LM_PREFILL = GraphSpec(
    name="lm_prefill",
    module="lm_prefill",
    description=("5 Hz LM planner (Qwen3ForCausalLM) on the chat prompt: last-position logits and the KV cache "
                 "of every layer (simple mode only)"),
    inputs=(TensorSpec("input_ids", "int64", ("B", "T_lm"), "prompt token ids (chat template, no padding)",
                       "lm_ids"),),
    outputs=(
        TensorSpec("logits", "float32", ("B", "V_lm"), "lm_head logits of the last position (before any processor)"),
        TensorSpec("present_keys", "float32", (*_LM_KV, "T_lm", "Dh_lm"),
                   "keys of every layer after k_norm and RoPE (positions 0..T_lm-1)"),
        TensorSpec("present_values", "float32", (*_LM_KV, "T_lm", "Dh_lm"), "values of every layer"),
    ),
    export_sizes={"B": 2, "T_lm": 19},
    reference="Qwen3ForCausalLM(ids, use_cache=True): logits[:, -1], DynamicCache keys/values stacked (sdpa)",
    modules=("lm",),
    trace_cost=2.0,
    workarounds=(
        "the library's Cache object is replaced by explicit stacked tensors [L, B, KV, P, Dh]; the wrapper calls "
        "the library's modules (norms, projections, rotary embedding, MLP, lm_head) and spells out the cache "
        "concat, the causal mask over [past | new] and SDPA with repeated GQA heads (exporters/lm_common.py)",
        "only the last position's logits are output (the host never reads the others)",
    ),
)

LM_DECODE = GraphSpec(
    name="lm_decode",
    module="lm_decode",
    description="5 Hz LM planner: new token(s) on the KV cache, last-position logits and the grown cache",
    inputs=(
        TensorSpec("input_ids", "int64", ("B", "T_lm"), "the next token id(s) (1 per host step)", "lm_ids"),
        TensorSpec("past_keys", "float32", (*_LM_KV, "P_lm", "Dh_lm"), "present_keys of the previous call"),
        TensorSpec("past_values", "float32", (*_LM_KV, "P_lm", "Dh_lm"), "present_values of the previous call"),
    ),
    outputs=(
        TensorSpec("logits", "float32", ("B", "V_lm"), "lm_head logits of the last new position"),
        TensorSpec("present_keys", "float32", (*_LM_KV, "P_lm+T_lm", "Dh_lm"), "past keys + the new positions"),
        TensorSpec("present_values", "float32", (*_LM_KV, "P_lm+T_lm", "Dh_lm"), "past values + the new positions"),
    ),
    export_sizes={"B": 2, "T_lm": 3, "P_lm": 11},
    reference=("Qwen3ForCausalLM(ids, position_ids=P.., past_key_values=DynamicCache(past)): logits[:, -1], "
               "cache stacked (sdpa)"),
    modules=("lm",),
    trace_cost=2.0,
    workarounds=LM_PREFILL.workarounds,
)

GRAPHS: tuple[GraphSpec, ...] = (TEXT_ENCODER, LYRIC_EMBEDDING, CONDITION_ENCODER, DIT_DECODER, VAE_DECODER,
                                 LM_PREFILL, LM_DECODE)
LM_GRAPHS = ("lm_prefill", "lm_decode")  # exported only when the checkpoint has the planner folder
GRAPH_SPECS: dict[str, GraphSpec] = {g.name: g for g in GRAPHS}
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1


def get_spec(name: str) -> GraphSpec:
    try:
        return GRAPH_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown graph {name!r}; choose from {', '.join(GRAPH_SPECS)}") from None


def parse_graph_list(text: str | None) -> list[str]:
    """``"a,b"`` -> validated graph names in pipeline order; ``None``/empty -> all graphs."""
    if not text:
        return list(GRAPH_SPECS)
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    for name in wanted:
        get_spec(name)
    return [name for name in GRAPH_SPECS if name in wanted]
