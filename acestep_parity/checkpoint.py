"""Strict checkpoint loader: upstream ACE-Step 1.5 layout -> diffusers / transformers modules.

The same code reads the real Hugging Face folder and the synthetic one. Upstream keys are mapped onto the library
modules (``decoder.*`` -> ``AceStepTransformer1DModel``, ``encoder.*`` + ``null_condition_emb`` ->
``AceStepConditionEncoder``, ``tokenizer.*`` / ``detokenizer.*`` -> the audio tokenizer / detokenizer, which
text2music never runs but whose keys are still checked; attention ``q_proj/k_proj/v_proj/o_proj/q_norm/k_norm``
-> ``to_q/to_k/to_v/to_out.0/norm_q/norm_k``; ``proj_in.1``/``proj_out.1`` -> ``proj_in_conv``/``proj_out_conv``).
Any missing, unexpected or mis-shaped tensor is a :class:`CheckpointError` naming the key and the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acestep_ort.host.lm_tokenizer import LM_DIR

DIT_DIR = "acestep-v15-turbo"
VAE_DIR = "vae"
TEXT_DIR = "Qwen3-Embedding-0.6B"
LM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")  # simple mode only
WEIGHT_NAMES = ("model.safetensors", "diffusion_pytorch_model.safetensors")
REQUIRED_FILES = (
    f"{DIT_DIR}/config.json",
    f"{DIT_DIR}/model.safetensors",
    f"{DIT_DIR}/silence_latent.pt",
    f"{VAE_DIR}/config.json",
    f"{VAE_DIR}/diffusion_pytorch_model.safetensors",
    f"{TEXT_DIR}/config.json",
    f"{TEXT_DIR}/model.safetensors",
    f"{TEXT_DIR}/tokenizer.json",
)
_ATTN_RENAMES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0",
                 "q_norm": "norm_q", "k_norm": "norm_k"}
_ATTN_RE = re.compile(r"\.(self_attn|cross_attn)\.(q_proj|k_proj|v_proj|o_proj|q_norm|k_norm)\.")
# Present in some Qwen3 exports (tied to embed_tokens); Qwen3Model has no head, so it is ignored by name.
_TEXT_IGNORED_KEYS = {"lm_head.weight"}


class CheckpointError(ValueError):
    """A checkpoint folder that does not match the upstream layout or its own config."""


def map_upstream_key(key: str) -> tuple[str, str]:
    """Upstream DiT-checkpoint key -> (component, library key)."""
    if key == "null_condition_emb":
        return "condition_encoder", key
    component, _, rest = key.partition(".")
    target = {"decoder": "transformer", "encoder": "condition_encoder", "tokenizer": "audio_tokenizer",
              "detokenizer": "audio_detokenizer"}.get(component)
    if target is None:
        raise CheckpointError(f"unexpected key {key!r}: no component owns the prefix {component!r}")
    rest = _ATTN_RE.sub(lambda m: f".{m.group(1)}.{_ATTN_RENAMES[m.group(2)]}.", "." + rest)[1:]
    if target == "transformer":
        rest = rest.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv.")
    return target, rest


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint directory {root} lacks {', '.join(missing)}")


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every required file (a real checkpoint takes a few seconds per GB)."""
    from acestep_ort.hashing import sha256_file

    return {rel: sha256_file(Path(root) / rel) for rel in REQUIRED_FILES}


def checkpoint_id(root: Path, hashes: dict[str, str] | None = None) -> str:
    """A short stable name for golden folders: ``<kind>-<12 hex of the combined file hashes>``."""
    root = Path(root)
    hashes = hashes or file_hashes(root)
    combined = hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()
    manifest = root / "synth_manifest.json"
    kind = f"synth-{read_json(manifest).get('preset', 'custom')}" if manifest.is_file() else "acestep-v15-turbo"
    return f"{kind}-{combined[:12]}"


def load_silence_latent(path: Path) -> np.ndarray:
    """``silence_latent.pt`` as stored: float32 [1, 64, frames] (read without torch, shared with the runtime)."""
    from acestep_ort.host.torch_file import load_tensor

    try:
        array = load_tensor(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if array.ndim != 3 or array.shape[0] != 1:
        raise CheckpointError(f"{path}: expected a [1, C, frames] tensor, got shape {array.shape}")
    return array.astype(np.float32)


_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


@dataclass(frozen=True)
class LazyTensor:
    """One tensor of a safetensors file, read with plain file reads only when it is copied into its module.

    Not ``safe_open``/``load_file``: those map the file, and mapped pages that were read stay in the process's RSS
    until unmapped, so a load peaked at two copies of the weights (the modules' storage plus the mapped file)
    however the tensors were copied. Reading one tensor's bytes at a time keeps the peak at the modules' storage
    plus one tensor in flight."""

    path: Path
    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    def load(self):
        import torch

        out = torch.empty(self.shape, dtype=getattr(torch, self.dtype))
        view = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
        if view.nbytes != self.end - self.start:
            raise CheckpointError(f"{self.path}: tensor {self.key!r} has {self.end - self.start} bytes, "
                                  f"{self.dtype}{list(self.shape)} needs {view.nbytes}")
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            if handle.readinto(view) != view.nbytes:
                raise CheckpointError(f"{self.path}: truncated while reading tensor {self.key!r}")
        return out


def _load_safetensors(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a safetensors file (header read now, data when each is loaded)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        base = 8 + size
        tensors = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise ValueError(f"tensor {key!r} has unsupported dtype {info['dtype']}")
            begin, finish = info["data_offsets"]
            tensors[key] = LazyTensor(path, key, _SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]),
                                      base + begin, base + finish)
        return tensors
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def empty_modules():
    """Context in which modules are built with their parameters on the meta device (no storage, no random init)
    and their buffers on the CPU (RoPE tables and other non-persistent buffers are computed as usual).
    :func:`strict_load` then gives each parameter the tensor read from the file, so a load holds one copy of the
    weights instead of the constructed modules plus the file's tensors. ``accelerate``'s ``init_empty_weights``."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def strict_load(module, tensors: dict, source: Path, config_path: Path, ignored: set[str] | None = None,
                load: bool = True) -> None:
    """Give ``module`` the ``tensors`` (torch tensors or :class:`LazyTensor`, cast to the module's float32) after
    checking keys and shapes both ways, one tensor at a time. The module may be built by :func:`empty_modules`
    (parameters on the meta device): each parameter is then replaced by the tensor read from the file, and none
    may stay on the meta device. ``load=False`` checks keys and shapes only (the file's header), reading no data."""
    import torch
    from accelerate.utils import set_module_tensor_to_device

    expected = module.state_dict(keep_vars=True)
    ignored = ignored or set()
    unexpected = sorted(k for k in tensors if k not in expected and k not in ignored)
    missing = sorted(k for k in expected if k not in tensors)
    problems = []
    if unexpected:
        problems.append(f"unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if missing:
        problems.append(f"missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for key in sorted(set(tensors) & set(expected)):
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            problems.append(
                f"tensor {key!r} has shape {tuple(tensors[key].shape)} but {config_path} implies "
                f"{tuple(expected[key].shape)}"
            )
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    if not load:
        return
    with torch.no_grad():
        for key, target in expected.items():
            value = tensors[key]
            value = value.load() if isinstance(value, LazyTensor) else value
            # set_module_tensor_to_device casts to the target's dtype (float32), like .float()
            set_module_tensor_to_device(module, key, "cpu", value=value, dtype=target.dtype)
            del value
    left = [name for name, tensor in (*module.named_parameters(), *module.named_buffers()) if tensor.is_meta]
    if left:
        raise CheckpointError(f"{source}: no tensor for {left[:5]} (still on the meta device after loading)")


@dataclass
class ReferenceModels:
    """The neural modules of the reference pipeline plus the host-side assets they need."""

    root: Path
    dit_config: dict
    vae_config: dict
    text_config: dict
    transformer: object
    condition_encoder: object
    audio_tokenizer: object
    audio_detokenizer: object
    vae: object
    text_encoder: object
    silence_latent: np.ndarray
    tokenizer_path: Path
    extras: dict = field(default_factory=dict)
    lm: object = None  # the 5 Hz LM (Qwen3ForCausalLM) when the checkpoint has acestep-5Hz-lm-0.6B/
    lm_config: dict | None = None


def _dit_kwargs(cfg: dict) -> dict:
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "rope_theta", "attention_bias", "attention_dropout", "rms_norm_eps")
    kw = {k: cfg[k] for k in keys if k in cfg}
    kw["sliding_window"] = cfg.get("sliding_window", 128) if cfg.get("use_sliding_window", True) else None
    kw["layer_types"] = cfg.get("layer_types")
    return kw


def build_transformer(cfg: dict):
    from diffusers import AceStepTransformer1DModel

    kw = _dit_kwargs(cfg)
    layer_types = kw.pop("layer_types")
    n = cfg["num_hidden_layers"]
    return AceStepTransformer1DModel(
        **kw, num_hidden_layers=n, layer_types=layer_types[:n] if layer_types else None,
        in_channels=cfg.get("in_channels", 192), audio_acoustic_hidden_dim=cfg.get("audio_acoustic_hidden_dim", 64),
        patch_size=cfg.get("patch_size", 2), encoder_hidden_size=cfg.get("encoder_hidden_size"),
        is_turbo=bool(cfg.get("is_turbo", False)), model_version=cfg.get("model_version"),
    ).eval()


def build_condition_encoder(cfg: dict):
    from diffusers.pipelines.ace_step import AceStepConditionEncoder

    return AceStepConditionEncoder(
        **_dit_kwargs(cfg), text_hidden_dim=cfg["text_hidden_dim"], timbre_hidden_dim=cfg["timbre_hidden_dim"],
        num_lyric_encoder_hidden_layers=cfg["num_lyric_encoder_hidden_layers"],
        num_timbre_encoder_hidden_layers=cfg["num_timbre_encoder_hidden_layers"],
    ).eval()


def build_audio_tokenizers(cfg: dict):
    from diffusers.pipelines.ace_step import AceStepAudioTokenDetokenizer, AceStepAudioTokenizer

    kw = _dit_kwargs(cfg)
    common = dict(audio_acoustic_hidden_dim=cfg["audio_acoustic_hidden_dim"],
                  pool_window_size=cfg["pool_window_size"],
                  num_attention_pooler_hidden_layers=cfg["num_attention_pooler_hidden_layers"])
    tokenizer = AceStepAudioTokenizer(**kw, **common, fsq_dim=cfg["fsq_dim"],
                                      fsq_input_levels=cfg["fsq_input_levels"],
                                      fsq_input_num_quantizers=cfg["fsq_input_num_quantizers"]).eval()
    detokenizer = AceStepAudioTokenDetokenizer(**kw, **common).eval()
    return tokenizer, detokenizer


def build_vae(cfg: dict):
    from diffusers import AutoencoderOobleck

    keys = ("encoder_hidden_size", "downsampling_ratios", "channel_multiples", "decoder_channels",
            "decoder_input_channels", "audio_channels", "sampling_rate")
    with warnings.catch_warnings():  # diffusers still builds the VAE with the legacy (deprecated) weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return AutoencoderOobleck(**{k: cfg[k] for k in keys if k in cfg}).eval()


def build_text_encoder(cfg: dict):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    return Qwen3Model(config).eval()


MODULE_NAMES = ("transformer", "condition_encoder", "audio_tokenizer", "audio_detokenizer", "vae", "text_encoder",
                "lm")


def load_reference_models(root: Path, modules: Collection[str] | None = None) -> ReferenceModels:
    """Build the modules from an upstream-layout folder, strictly.

    ``modules`` (default: all of :data:`MODULE_NAMES`) names the ones whose weights are read; the others are
    still checked key by key and shape by shape against the file headers, but stay ``None``, so one graph's
    export holds only its own weights (a full-size VAE export does not load the 9 GB DiT)."""
    import torch

    root = Path(root)
    wanted = set(MODULE_NAMES if modules is None else modules)
    unknown = wanted - set(MODULE_NAMES)
    if unknown:
        raise ValueError(f"unknown module(s) {sorted(unknown)}; choose from {list(MODULE_NAMES)}")
    check_layout(root)
    dit_cfg_path, vae_cfg_path, text_cfg_path = (root / DIT_DIR / "config.json", root / VAE_DIR / "config.json",
                                                 root / TEXT_DIR / "config.json")
    dit_cfg, vae_cfg, text_cfg = read_json(dit_cfg_path), read_json(vae_cfg_path), read_json(text_cfg_path)

    torch.manual_seed(0)  # keep whatever construction draws (buffers) fixed
    with torch.no_grad(), empty_modules():
        transformer = build_transformer(dit_cfg)
        condition_encoder = build_condition_encoder(dit_cfg)
        audio_tokenizer, audio_detokenizer = build_audio_tokenizers(dit_cfg)
        vae = build_vae(vae_cfg)
        text_encoder = build_text_encoder(text_cfg)
    with torch.no_grad():
        dit_file = root / DIT_DIR / "model.safetensors"
        grouped: dict[str, dict] = {"transformer": {}, "condition_encoder": {}, "audio_tokenizer": {},
                                    "audio_detokenizer": {}}
        for key, tensor in _load_safetensors(dit_file).items():
            try:
                component, mapped = map_upstream_key(key)
            except CheckpointError as exc:
                raise CheckpointError(f"{dit_file}: {exc}") from None
            grouped[component][mapped] = tensor

        silence = load_silence_latent(root / DIT_DIR / "silence_latent.pt")
        if silence.shape[1] != dit_cfg["timbre_hidden_dim"]:
            raise CheckpointError(
                f"{root / DIT_DIR / 'silence_latent.pt'}: {silence.shape[1]} channels but {dit_cfg_path} "
                f"says timbre_hidden_dim={dit_cfg['timbre_hidden_dim']}"
            )
        # diffusers keeps the silence latent as a persistent buffer [1, frames, C]; upstream ships it separately.
        buffer = condition_encoder.silence_latent
        frames = torch.from_numpy(silence).transpose(1, 2).contiguous()
        condition_encoder.silence_latent = torch.zeros(frames.shape, dtype=buffer.dtype)
        grouped["condition_encoder"]["silence_latent"] = frames

        for name, module in (("transformer", transformer), ("condition_encoder", condition_encoder),
                             ("audio_tokenizer", audio_tokenizer), ("audio_detokenizer", audio_detokenizer)):
            strict_load(module, grouped[name], dit_file, dit_cfg_path, load=name in wanted)

        vae_file = root / VAE_DIR / "diffusion_pytorch_model.safetensors"
        strict_load(vae, _load_safetensors(vae_file), vae_file, vae_cfg_path, load="vae" in wanted)

        text_file = root / TEXT_DIR / "model.safetensors"
        text_tensors = _load_safetensors(text_file)
        if text_tensors and all(k.startswith("model.") or k in _TEXT_IGNORED_KEYS for k in text_tensors):
            text_tensors = {k.removeprefix("model."): v for k, v in text_tensors.items()}
        strict_load(text_encoder, text_tensors, text_file, text_cfg_path, ignored=_TEXT_IGNORED_KEYS,
                    load="text_encoder" in wanted)
    built = {"transformer": transformer, "condition_encoder": condition_encoder, "audio_tokenizer": audio_tokenizer,
             "audio_detokenizer": audio_detokenizer, "vae": vae, "text_encoder": text_encoder}
    kept = {name: module if name in wanted else None for name, module in built.items()}

    lm, lm_cfg = load_lm(root) if has_lm(root) and "lm" in wanted else (None, None)
    if has_lm(root) and "lm" not in wanted:
        lm_cfg = read_json(root / LM_DIR / "config.json")
    return ReferenceModels(
        root=root, dit_config=dit_cfg, vae_config=vae_cfg, text_config=text_cfg, **kept, silence_latent=silence,
        tokenizer_path=root / TEXT_DIR / "tokenizer.json", lm=lm, lm_config=lm_cfg,
    )


def lm_file_hashes(root: Path, genres_path: Path | None = None) -> dict[str, str]:
    """SHA-256 of the LM folder's required files and of the genres list (the planner's inputs)."""
    from acestep_ort.hashing import sha256_file

    root = Path(root)
    out = {f"{LM_DIR}/{name}": sha256_file(root / LM_DIR / name) for name in LM_FILES}
    from acestep_ort.host.lm_tokenizer import genres_path as default_genres

    genres = Path(genres_path) if genres_path else default_genres(root)
    out["genres_vocab.txt"] = sha256_file(genres)
    return out


def has_lm(root: Path) -> bool:
    """Whether the checkpoint carries the planner folder (its config); a partial folder fails in :func:`load_lm`."""
    return (Path(root) / LM_DIR / "config.json").is_file()


def check_lm_layout(root: Path) -> Path:
    folder = Path(root) / LM_DIR
    missing = [name for name in LM_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"the 5 Hz LM folder {folder} lacks {', '.join(missing)} (simple mode needs it; the "
                              "synthetic generator writes one, `acestep-parity synth`)")
    return folder


def build_lm(cfg: dict):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(config).eval()


def load_lm(root: Path):
    """``acestep-5Hz-lm-*`` as a transformers ``Qwen3ForCausalLM`` (float32, CPU), strictly: every saved key
    (``model.*``, ``lm_head.weight`` unless ``tie_word_embeddings``) must match the config's shapes."""
    import torch

    folder = check_lm_layout(root)
    cfg_path = folder / "config.json"
    cfg = read_json(cfg_path)
    weights = folder / "model.safetensors"
    tensors = _load_safetensors(weights)
    if cfg.get("tie_word_embeddings", False) and "lm_head.weight" not in tensors:
        if "model.embed_tokens.weight" in tensors:
            tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    torch.manual_seed(0)
    with torch.no_grad(), empty_modules():
        model = build_lm(cfg)
    with torch.no_grad():
        strict_load(model, tensors, weights, cfg_path)
    if cfg.get("tie_word_embeddings", False):
        model.tie_weights()  # loading gave lm_head its own copy of the embedding; share it again
    return model, cfg
