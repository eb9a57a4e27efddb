"""Golden store: frozen reference captures per checkpoint, ``golden/<checkpoint-id>/<case>.npz`` + manifest.

The manifest ties every npz to the checkpoint file hashes, the case-file hash, the library versions, the machine
it was frozen on (:mod:`acestep_parity.machine`) and the capture list it was made with, so a test can refuse a
golden that no longer describes what it compares against. Every array's digest is verified on load: an edited or
corrupted npz fails naming the file and the array instead of silently becoming the reference.

A case's stored captures are kept within :data:`MAX_CASE_BYTES` (raw) by leaving out the largest ones first
(only the 120 s no-duration case needs it: its audio, xt and vt, left out when the cap was 8 MiB; at 12 MiB
simple mode's batch-2 15 s audio is kept, so no simple_mode item skips for size). The manifest lists them under ``omitted`` with
their digests, and golden-pair tests of them skip saying so; the live pairs still compare them in full.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zipfile
import zlib
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
MAX_CASE_BYTES = 12 * 1024 * 1024
LIBRARIES = ("torch", "transformers", "diffusers", "tokenizers", "numpy", "safetensors", "onnxruntime")


class GoldenError(RuntimeError):
    """A golden that is stale, corrupted or inconsistent; the message says how to re-freeze."""


class GoldenMissing(GoldenError):
    """No golden entry for this case (or capture): the golden pairs skip; the live pairs still run."""


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
        max_duration, sampling), recorded in the case's manifest entry and checked by :meth:`load`; the planner's
        captures (:data:`LM_GOLDEN_CAPTURES`) are then stored too and never omitted for size."""
        from acestep_parity.machine import describe

        self.root.mkdir(parents=True, exist_ok=True)
        captured = {k: np.asarray(arrays[k]) for k in GOLDEN_CAPTURES}
        kept = dict(captured)
        while sum(v.nbytes for v in kept.values()) > MAX_CASE_BYTES:
            kept.pop(max(kept, key=lambda k: kept[k].nbytes))
        omitted = {k: v for k, v in captured.items() if k not in kept}
        if planner is not None:
            kept.update({k: np.asarray(arrays[k]) for k in LM_GOLDEN_CAPTURES})
        path = self.root / f"{case_id}.npz"
        np.savez_compressed(path, **kept)
        manifest = json.loads(self.manifest_path.read_text(encoding="utf-8")) if self.exists() else {}
        manifest.update({
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_files": self.checkpoint_hashes,
            "libraries": library_versions(),
            "captures": list(GOLDEN_CAPTURES),
        })
        entry = {
            "case_sha256": case_sha256,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256_16": array_digest(v)}
                       for k, v in kept.items()},
            "frozen_on": describe(),
        }
        if omitted:
            entry["omitted"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256_16": array_digest(v),
                                    "reason": f"{v.nbytes / 2**20:.1f} MiB: the case's captures exceed "
                                              f"{MAX_CASE_BYTES / 2**20:.0f} MiB"}
                                for k, v in omitted.items()}
        if planner is not None:
            entry["planner"] = planner
        manifest.setdefault("cases", {})[case_id] = entry
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
            raise GoldenMissing(f"{self.manifest_path} has no golden for case {case_id}: freeze it with "
                                f"`{freeze_command(self.checkpoint_dir)} --case {case_id}` (the live pairs still run)")
        if entry["case_sha256"] != case_sha256:
            raise GoldenError(f"case {case_id} changed since its golden was frozen ({self.manifest_path}); {how}")
        if planner is not None and entry.get("planner") != planner:
            raise GoldenError(f"the planner inputs of {case_id} (LM files, genres list, max_duration) differ from "
                              f"{self.manifest_path}: {entry.get('planner')} != {planner}; {how}")
        path = self.root / f"{case_id}.npz"
        if not path.is_file():
            raise GoldenError(f"{path} is missing although the manifest lists it; {how}")
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged container
            raise GoldenError(f"{path} cannot be read ({type(exc).__name__}: {exc}); {how}") from None
        expected = entry.get("arrays", {})
        omitted = entry.get("omitted", {})
        wanted = manifest["captures"] + (list(LM_GOLDEN_CAPTURES) if planner is not None else [])
        missing = [k for k in wanted if k not in arrays and k not in omitted]
        if missing:
            raise GoldenError(f"{path} lacks captures {missing}; {how}")
        for name, array in arrays.items():
            meta = expected.get(name)
            if meta is None:
                raise GoldenError(f"{path}: array {name!r} is not listed in {self.manifest_path}; {how}")
            if array_digest(array) != meta["sha256_16"] or list(array.shape) != meta["shape"]:
                raise GoldenError(f"{path}: array {name!r} does not match its digest in {self.manifest_path} "
                                  f"(edited or corrupted golden); {how}")
        return arrays

    def omitted(self, case_id: str) -> dict[str, dict]:
        """Captures of ``case_id`` that were too large to store (name -> shape, dtype, digest, reason)."""
        if not self.exists():
            return {}
        return self.manifest().get("cases", {}).get(case_id, {}).get("omitted", {})

    def frozen_on(self) -> dict[str, dict]:
        """Per case, the machine description recorded when it was frozen (empty dict when not recorded)."""
        if not self.exists():
            return {}
        return {cid: entry.get("frozen_on", {}) for cid, entry in self.manifest().get("cases", {}).items()}
