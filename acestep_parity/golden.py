"""Golden store: frozen reference captures per checkpoint, ``golden/<checkpoint-id>/<case>.npz`` + manifest.

The manifest ties every npz to the checkpoint file hashes, the case-file hash, the library versions and the
capture list it was made with, so a test can refuse a golden that no longer describes what it compares against.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

# What a golden npz holds. The pre-normalization waveform is left out to keep the committed set small; the
# normalized audio is stored in full float32.
GOLDEN_CAPTURES = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "schedule",
    "noise", "xt", "vt", "pred_latents", "audio",
)
# Simple mode adds the planner's captures, kept small: token stream, per-step top-k raw logits (ids + values),
# per-step digests of the FSM's allowed-token mask, margins, output text and parsed metadata (not the full
# [steps, V] logits or masks: 217k-token vocab x 3500 steps would be gigabytes for the real LM).
LM_GOLDEN_CAPTURES = ("lm_prompt_ids", "lm_tokens", "lm_topk_ids", "lm_topk_logits", "lm_mask_digests",
                      "lm_margins", "lm_text", "lm_metadata")
LIBRARIES = ("torch", "transformers", "diffusers", "tokenizers", "numpy", "safetensors", "onnxruntime")


class GoldenError(RuntimeError):
    """A golden that is missing, stale or inconsistent; the message says how to re-freeze."""


def freeze_command(checkpoint_dir: Path | None) -> str:
    target = f" --checkpoint-dir {checkpoint_dir}" if checkpoint_dir else ""
    return f"acestep-parity freeze{target}"


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    out["machine"] = platform.machine()
    return out


def array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@dataclass
class GoldenStore:
    """One checkpoint's golden folder."""

    root: Path
    checkpoint_id: str
    checkpoint_hashes: dict[str, str]
    checkpoint_dir: Path | None = None

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        if not self.exists():
            raise GoldenError(
                f"no golden for checkpoint {self.checkpoint_id} (looked in {self.root}); create it with "
                f"`{freeze_command(self.checkpoint_dir)}`"
            )
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def write(self, case_id: str, case_sha256: str, arrays: dict[str, np.ndarray],
              planner: dict | None = None) -> Path:
        """``planner`` (simple mode): the LM inputs the captures depend on (LM file hashes, genres list hash,
        max_duration, sampling), recorded in the case's manifest entry and checked by :meth:`load`."""
        self.root.mkdir(parents=True, exist_ok=True)
        kept = {k: arrays[k] for k in GOLDEN_CAPTURES}
        if planner is not None:
            kept.update({k: arrays[k] for k in LM_GOLDEN_CAPTURES})
        path = self.root / f"{case_id}.npz"
        np.savez_compressed(path, **kept)
        manifest = json.loads(self.manifest_path.read_text(encoding="utf-8")) if self.exists() else {}
        manifest.update({
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_files": self.checkpoint_hashes,
            "libraries": library_versions(),
            "captures": list(GOLDEN_CAPTURES),
        })
        manifest.setdefault("cases", {})[case_id] = {
            "case_sha256": case_sha256,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256_16": array_digest(v)}
                       for k, v in kept.items()},
        }
        if planner is not None:
            manifest["cases"][case_id]["planner"] = planner
        manifest["cases"] = dict(sorted(manifest["cases"].items()))
        self.manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def load(self, case_id: str, case_sha256: str, planner: dict | None = None) -> dict[str, np.ndarray]:
        """The golden arrays of one case, after checking the manifest against checkpoint and case (and, for
        simple mode, the planner's inputs: LM files, genres list, max_duration)."""
        manifest = self.manifest()
        how = f"re-freeze with `{freeze_command(self.checkpoint_dir)}`"
        if manifest.get("checkpoint_files") != self.checkpoint_hashes:
            raise GoldenError(f"{self.manifest_path} was frozen for other checkpoint files; {how}")
        entry = manifest.get("cases", {}).get(case_id)
        if entry is None:
            raise GoldenError(f"{self.manifest_path} has no entry for case {case_id}; {how}")
        if entry["case_sha256"] != case_sha256:
            raise GoldenError(f"case {case_id} changed since its golden was frozen ({self.manifest_path}); {how}")
        if planner is not None and entry.get("planner") != planner:
            raise GoldenError(f"the planner inputs of {case_id} (LM files, genres list, max_duration) differ from "
                              f"{self.manifest_path}: {entry.get('planner')} != {planner}; {how}")
        path = self.root / f"{case_id}.npz"
        if not path.is_file():
            raise GoldenError(f"{path} is missing although the manifest lists it; {how}")
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        missing = [k for k in manifest["captures"] + (list(LM_GOLDEN_CAPTURES) if planner else []) if k not in arrays]
        if missing:
            raise GoldenError(f"{path} lacks captures {missing}; {how}")
        return arrays
