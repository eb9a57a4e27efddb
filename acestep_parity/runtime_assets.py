"""The host assets a runtime needs beside the graphs, copied from the checkpoint into every ONNX folder.

Keeps an exported folder self-contained: the runtime reads the tokenizer and the silence latent from it and
never needs the (multi-GB) checkpoint folder, nor torch to read ``silence_latent.pt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ASSETS = {
    "tokenizer.json": "Qwen3-Embedding-0.6B/tokenizer.json",
    "tokenizer_config.json": "Qwen3-Embedding-0.6B/tokenizer_config.json",
    "silence_latent.pt": "acestep-v15-turbo/silence_latent.pt",
}
# The planner's host assets (simple mode), copied under the same folder name when the checkpoint has the LM.
LM_ASSETS = ("tokenizer.json", "tokenizer_config.json", "genres_vocab.txt")


def copy_runtime_assets(checkpoint_dir: Path, onnx_dir: Path) -> list[Path]:
    """Copy :data:`ASSETS` from an upstream-layout checkpoint into ``onnx_dir``."""
    written = []
    for name, rel in ASSETS.items():
        source = Path(checkpoint_dir) / rel
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing; cannot prepare {onnx_dir}")
        target = Path(onnx_dir) / name
        shutil.copyfile(source, target)
        written.append(target)
    from acestep_parity.host.lm_vocab import LM_DIR, genres_path

    if (Path(checkpoint_dir) / LM_DIR / "config.json").is_file():
        (Path(onnx_dir) / LM_DIR).mkdir(parents=True, exist_ok=True)
        for name in LM_ASSETS:
            source = genres_path(checkpoint_dir) if name == "genres_vocab.txt" else Path(checkpoint_dir) / LM_DIR / name
            target = Path(onnx_dir) / LM_DIR / name
            shutil.copyfile(source, target)
            written.append(target)
    return written


def missing_assets(onnx_dir: Path) -> list[str]:
    return [name for name in ASSETS if not (Path(onnx_dir) / name).is_file()]
