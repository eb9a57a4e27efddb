"""Synthetic ``acestep-5Hz-lm-0.6B``: a Qwen3ForCausalLM folder (config, safetensors, tokenizer, chat template).

Upstream's planner is a Qwen3 causal LM whose vocabulary is Qwen3's plus ``<|audio_code_N|>`` tokens, prompted
through the tokenizer's chat template (``LLMHandler.build_formatted_prompt_for_inspiration`` in
``acestep/llm_inference.py``). This module writes the same layout at a small size, byte-deterministically:

* ``tokenizer.json``: the byte-level BPE of :mod:`acestep_parity.synth.tokenizer` trained on that corpus plus
  planner-style text (CoT blocks, field names, inspiration prompts), with the added tokens ``<|endoftext|>``,
  ``<|im_start|>``, ``<|im_end|>`` (special), ``<think>``, ``</think>`` (not special) and the audio-code tokens
  (not special); post-processor ``ByteLevel`` (Qwen3 LM tokenizers append nothing, unlike Qwen3-Embedding's).
* ``tokenizer_config.json``: ``Qwen2Tokenizer``, eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos, and a
  ``chat_template`` that renders system/user turns and the generation prompt exactly as Qwen3's template does
  (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` ... ``<|im_start|>assistant\\n``; with
  ``enable_thinking=False`` it appends ``<think>\\n\\n</think>\\n\\n`` like Qwen3). Tool calls and assistant
  reasoning turns of the real template are not reproduced (the planner never sends them).
* ``config.json``: transformers ``Qwen3Config`` fields, ``vocab_size == len(tokenizer)`` (upstream adds
  vocab-sized masks to the logits, so a padded vocab breaks it), untied ``lm_head``.
* ``model.safetensors``: ``model.embed_tokens``, ``model.layers.*``, ``model.norm``, ``lm_head`` drawn from PCG64
  per key (like every synthetic tensor), except that ``lm_head`` also carries a *designed next-token direction*.
* ``genres_vocab.txt``: a small synthetic genres list. Upstream reads ``acestep/genres_vocab.txt`` from its code
  package (178,571 lines), not from the checkpoint; the project takes the list as an input file and the
  synthetic checkpoint ships its own next to the LM.

Why a designed direction: a random LM's next-token distribution is nearly flat (top-1/top-2 margins of 1e-3 where
the whole vocabulary competes), so 1e-6 of float noise flips tokens. Here ``lm_head[j] = spread * g_j + peak *
sum(unit(embed[i]) for i with successor(i) == j)`` with ``g_j ~ N(0, 1/d)``: the final hidden state stays close
to the last token's embedding, so a token with a scripted successor predicts it with a large margin, and every
other choice (the FSM's constrained digits, keys, genres, languages) is decided by the random part, which the
prompt moves through attention. The script (:data:`SCRIPTS`) makes free text short and structured: the caption
runs into a newline followed by ``duration`` (upstream's caption-ending path) and the lyrics end in EOS.
"""

from __future__ import annotations

import json
import math
import pathlib
import zlib
from typing import Any

import numpy as np

from acestep_parity.synth import tokenizer as base
from acestep_parity.synth.presets import LmPreset

LM_DIR = "acestep-5Hz-lm-0.6B"
GENRES_FILE = "genres_vocab.txt"
MAX_VALID_AUDIO_CODE = 63999
OUT_OF_RANGE_CODES = (64000, 65534)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Free-text script: each list is tokenized as one string and every token gets the next one as its successor.
# The first ':' is the one that closes the forced "caption:"; the final ':' (after "duration") has none.
SCRIPTS = (
    "caption: Warm city pop with soft synths.\nduration:",
    "</think>\n\n[verse]\nHello summer night",
)
SCRIPT_END = {1: base.IM_END}  # script index -> successor of its last token

SYNTH_GENRES = (
    "# Synthetic genres list for the synthetic LM (upstream ships acestep/genres_vocab.txt, 178,571 lines).",
    "pop", "synth pop", "city pop", "k-pop", "j-pop", "french pop", "rock", "j-rock", "anime rock", "indie rock",
    "ambient", "dark ambient", "lo-fi", "lo-fi hip hop", "hip hop", "jazz", "smooth jazz", "piano", "solo piano",
    "classical", "chanson", "folk", "indie folk", "electronic", "edm", "house", "deep house", "techno", "r&b",
    "soul", "funk", "disco", "country", "blues", "metal", "punk", "reggae", "bossa nova", "latin", "ballad",
    "children's music", "Synthwave", "", "Acoustic Ballad",
)

_FIELDS_CORPUS = (
    "bpm: {bpm}\ncaption: {caption}\nduration: {duration}\ngenres: {genres}\nkeyscale: {key}\nlanguage: {lang}\n"
    "timesignature: {ts}\n"
)
_QUERIES = (
    "a calm song for a rainy morning", "an energetic rock anthem for running", "soft jazz for a late night drive",
    "a cheerful children's song about animals", "dark electronic music for a video game boss fight",
)


def _lm_corpus() -> list[str]:
    docs = list(base._corpus())
    keys = ("C major", "A minor", "G major", "E minor", "F# minor", "B♭ major", "D major", "C# minor", "Eb major")
    langs = ("en", "ja", "fr", "es", "de", "pt", "zh", "ko", "unknown")
    genres = [g for g in SYNTH_GENRES if g and not g.startswith("#")]
    for i, caption in enumerate(base._CAPTIONS):
        docs.append(_FIELDS_CORPUS.format(
            bpm=60 + (i * 37) % 181, caption=caption, duration=10 + (i * 53) % 290, genres=genres[i % len(genres)],
            key=keys[i % len(keys)], lang=langs[i % len(langs)], ts=(4, 3, 6, 2)[i % 4]))
    for i, query in enumerate(_QUERIES):
        docs.append("# Instruction\nExpand the user's input into a more detailed and specific musical "
                    f"description:\n\n{query}\n\ninstrumental: {'true' if i % 2 else 'false'}")
    docs.append(SCRIPTS[0])
    docs.append(SCRIPTS[1].replace(base.END_THINK, ""))
    return docs


def audio_code_values(preset: LmPreset) -> list[int]:
    values = list(range(preset.audio_codes))
    if preset.audio_codes <= MAX_VALID_AUDIO_CODE:
        values += list(OUT_OF_RANGE_CODES)
    return values


def added_tokens(preset: LmPreset) -> list[tuple[str, bool]]:
    return list(base.ADDED_TOKENS) + [(f"<|audio_code_{v}|>", False) for v in audio_code_values(preset)]


def build_tokenizer_json(preset: LmPreset) -> dict[str, Any]:
    vocab, merges = base.train_bpe(_lm_corpus(), preset.bpe_vocab_size)
    if len(vocab) != preset.bpe_vocab_size:
        raise AssertionError(f"trained {len(vocab)} tokens, expected {preset.bpe_vocab_size}")
    added = [base._added_token(preset.bpe_vocab_size + i, content, special)
             for i, (content, special) in enumerate(added_tokens(preset))]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": base._pre_tokenizer_json(),
        "post_processor": dict(base._BYTE_LEVEL),
        "decoder": dict(base._BYTE_LEVEL),
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [f"{left} {right}" for left, right in merges],
        },
    }


def build_tokenizer_config(preset: LmPreset) -> dict[str, Any]:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(preset.bpe_vocab_size + i): base._token_entry(content, special)
            for i, (content, special) in enumerate(added_tokens(preset))
        },
        "additional_special_tokens": [base.IM_START, base.IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": base.IM_END,
        "errors": "replace",
        "model_max_length": base.MODEL_MAX_LENGTH,
        "pad_token": base.ENDOFTEXT,
        "padding_side": "right",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def render_tokenizer_files(preset: LmPreset) -> dict[str, bytes]:
    tok = build_tokenizer_json(preset)
    model = tok["model"]
    return {
        "tokenizer.json": base._dumps(tok, sort_keys=False),
        "tokenizer_config.json": base._dumps(build_tokenizer_config(preset), sort_keys=True),
        "special_tokens_map.json": base._dumps(base.build_special_tokens_map(), sort_keys=True),
        "added_tokens.json": base._dumps(
            {c: preset.bpe_vocab_size + i for i, (c, _) in enumerate(added_tokens(preset))}, sort_keys=True),
        "vocab.json": base._dumps(model["vocab"], sort_keys=True),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{m}\n" for m in model["merges"])).encode("utf-8"),
    }


def lm_config(preset: LmPreset, vocab_size: int, ids: dict[str, int]) -> dict:
    """``config.json`` with transformers ``Qwen3Config`` field names (Qwen3-0.6B values where size-free)."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": vocab_size,
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_hidden_layers,
        "num_attention_heads": preset.num_attention_heads,
        "num_key_value_heads": preset.num_key_value_heads,
        "head_dim": preset.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": preset.num_hidden_layers,
        "tie_word_embeddings": False,
        "bos_token_id": ids[base.ENDOFTEXT],
        "eos_token_id": ids[base.IM_END],
        "pad_token_id": ids[base.ENDOFTEXT],
        "use_cache": True,
        "torch_dtype": "float32",
    }


def lm_checkpoint_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Upstream keys of a saved ``Qwen3ForCausalLM`` (``model.`` prefix; ``lm_head`` unless tied)."""
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = (h,)
        out[f"{p}.post_attention_layernorm.weight"] = (h,)
        out[f"{p}.self_attn.q_proj.weight"] = (heads * hd, h)
        out[f"{p}.self_attn.k_proj.weight"] = (kv * hd, h)
        out[f"{p}.self_attn.v_proj.weight"] = (kv * hd, h)
        out[f"{p}.self_attn.o_proj.weight"] = (h, heads * hd)
        out[f"{p}.self_attn.q_norm.weight"] = (hd,)
        out[f"{p}.self_attn.k_norm.weight"] = (hd,)
        out[f"{p}.mlp.gate_proj.weight"] = (inter, h)
        out[f"{p}.mlp.up_proj.weight"] = (inter, h)
        out[f"{p}.mlp.down_proj.weight"] = (h, inter)
    if not cfg.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (v, h)
    return out


def successors(tokenizer_json: str) -> dict[int, int]:
    """Token id -> scripted next token id, from :data:`SCRIPTS` (raises on a token with two successors)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    out: dict[int, int] = {}
    for index, text in enumerate(SCRIPTS):
        ids = tok.encode(text, add_special_tokens=False).ids
        if index == 0:  # the chain starts at the ':' that closes the forced "caption:"
            ids = ids[len(tok.encode(text.split(":")[0], add_special_tokens=False).ids):]
        pairs = list(zip(ids[:-1], ids[1:], strict=True))
        if index in SCRIPT_END:
            pairs.append((ids[-1], tok.token_to_id(SCRIPT_END[index])))
        for a, b in pairs:
            if out.get(a, b) != b:
                raise AssertionError(f"script token {tok.id_to_token(a)!r} would have two successors")
            out[a] = b
    return out


def _draw(seed: int, key: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode("utf-8"))]))
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)).astype(np.float32)


def lm_tensors(preset: LmPreset, cfg: dict, seed: int, succ: dict[int, int]) -> dict[str, np.ndarray]:
    out = {}
    for key, shape in lm_checkpoint_shapes(cfg).items():
        if key.endswith("norm.weight") or key.endswith("layernorm.weight"):
            out[key] = _draw(seed, key, shape, 0.1, 1.0)
        elif key == "model.embed_tokens.weight":
            out[key] = _draw(seed, key, shape, 1.0)
        elif key == "lm_head.weight":
            head = _draw(seed, key, shape, preset.spread / np.sqrt(shape[1]))
            embed = out["model.embed_tokens.weight"]
            for src, dst in sorted(succ.items()):
                # the norm by an exactly rounded float64 sum: np.linalg.norm on float32 goes through BLAS, whose
                # kernels (AVX2 vs AVX-512) round differently, and the checkpoint must be byte-identical everywhere
                norm = math.sqrt(math.fsum(float(x) * float(x) for x in embed[src]))
                direction = (embed[src].astype(np.float64) / norm).astype(np.float32)
                head[dst] += np.float32(preset.peak) * direction
            out[key] = head.astype(np.float32)
        else:
            out[key] = _draw(seed, key, shape, 1.0 / np.sqrt(shape[1]))
    return out


def write_lm(preset: LmPreset, out_dir: pathlib.Path, seed: int) -> None:
    """Write the whole ``acestep-5Hz-lm-0.6B`` folder (and its genres list) into ``out_dir``."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = render_tokenizer_files(preset)
    Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    ids = {c: preset.bpe_vocab_size + i for i, (c, _) in enumerate(added_tokens(preset))}
    cfg = lm_config(preset, preset.bpe_vocab_size + len(ids), ids)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tensors = lm_tensors(preset, cfg, seed, successors(files["tokenizer.json"].decode("utf-8")))
    save_file(dict(sorted(tensors.items())), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / GENRES_FILE).write_text("\n".join(SYNTH_GENRES) + "\n", encoding="utf-8")
