"""The host assets a runtime needs beside the graphs, copied from the checkpoint into every ONNX folder.

Keeps an exported folder self-contained: the runtime reads the tokenizer and the silence latent from it and
never needs the (multi-GB) checkpoint folder, nor torch to read ``silence_latent.pt``. The silence latent is
also written as ``silence_latent.npy`` (plain little-endian float32, the same array), so runtimes in other
languages (the Rust runtime) read it without a pickle reader; ``asset_records`` gives the manifest entries
(size and SHA-256 of every asset) that let a runtime check what it loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from acestep_ort.hashing import sha256_file

ASSETS = {
    "tokenizer.json": "Qwen3-Embedding-0.6B/tokenizer.json",
    "tokenizer_config.json": "Qwen3-Embedding-0.6B/tokenizer_config.json",
    "silence_latent.pt": "acestep-v15-turbo/silence_latent.pt",
}
# Written from an asset rather than copied: name -> the asset it is derived from.
DERIVED_ASSETS = {"silence_latent.npy": "silence_latent.pt"}
# The planner's host assets (simple mode), copied under the same folder name when the checkpoint has the LM.
LM_ASSETS = ("tokenizer.json", "tokenizer_config.json", "genres_vocab.txt")


def write_silence_latent_npy(pt_path: Path, npy_path: Path) -> Path:
    """``silence_latent.pt`` -> ``silence_latent.npy``: the same [1, C, frames] array as little-endian float32."""
    from acestep_ort.host.torch_file import load_tensor

    array = np.ascontiguousarray(load_tensor(pt_path), dtype="<f4")
    np.save(npy_path, array, allow_pickle=False)
    return npy_path


def copy_runtime_assets(checkpoint_dir: Path, onnx_dir: Path) -> list[Path]:
    """Copy :data:`ASSETS` from an upstream-layout checkpoint into ``onnx_dir`` and write :data:`DERIVED_ASSETS`."""
    written = []
    for name, rel in ASSETS.items():
        source = Path(checkpoint_dir) / rel
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing; cannot prepare {onnx_dir}")
        target = Path(onnx_dir) / name
        shutil.copyfile(source, target)
        written.append(target)
    written.append(write_silence_latent_npy(Path(onnx_dir) / "silence_latent.pt",
                                            Path(onnx_dir) / "silence_latent.npy"))
    from acestep_ort.host.lm_tokenizer import LM_DIR, genres_path

    if (Path(checkpoint_dir) / LM_DIR / "config.json").is_file():
        (Path(onnx_dir) / LM_DIR).mkdir(parents=True, exist_ok=True)
        for name in LM_ASSETS:
            source = genres_path(checkpoint_dir) if name == "genres_vocab.txt" else Path(checkpoint_dir) / LM_DIR / name
            target = Path(onnx_dir) / LM_DIR / name
            shutil.copyfile(source, target)
            written.append(target)
    manifest = Path(onnx_dir) / "manifest.json"
    if manifest.is_file():  # a folder exported before: record the assets it now has
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["assets"] = asset_records(onnx_dir)
        manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return written


def asset_records(onnx_dir: Path) -> dict[str, dict]:
    """Manifest entries of every asset present in ``onnx_dir``: ``{name: {"file", "bytes", "sha256"}}``."""
    records = {}
    from acestep_ort.host.lm_tokenizer import LM_DIR

    for name in (*ASSETS, *DERIVED_ASSETS, *(f"{LM_DIR}/{n}" for n in LM_ASSETS)):
        path = Path(onnx_dir) / name
        if path.is_file():
            records[name] = {"file": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def missing_assets(onnx_dir: Path) -> list[str]:
    return [name for name in (*ASSETS, *DERIVED_ASSETS) if not (Path(onnx_dir) / name).is_file()]


def onnx_folder_hint(folder: Path) -> str:
    """What a folder that is not an exported one probably is, as the end of an error message: the exported folder
    below it (``fp32/``, ``<checkpoint id>/fp32``, ``artifacts/…`` or ``.cache/artifacts/…``, newest first), or a
    checkpoint that has to be exported first; "" when nothing is recognised."""
    folder = Path(folder)
    if (folder / "acestep-v15-turbo" / "config.json").is_file():
        return (f"; {folder} is a checkpoint folder, not an exported one: export it first with "
                f"`acestep-export --checkpoint-dir {folder} --out DIR`")
    for pattern in ("fp32/manifest.json", "*/fp32/manifest.json", "artifacts/*/fp32/manifest.json",
                    ".cache/artifacts/*/fp32/manifest.json"):
        found = sorted(folder.glob(pattern), key=lambda m: m.stat().st_mtime)
        if found:
            return f"; the exported folder is probably {found[-1].parent}"
    return ""
