"""Where things live: the repository's cases/ and golden/, and the cache for generated checkpoints/artifacts."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


def find_repo_root() -> Path:
    """The acestep-parity checkout: ``$ACESTEP_PARITY_ROOT``, else the folder above this package when it holds
    ``cases/tolerances.json`` (an editable install, or a run from the checkout), else the nearest folder at or above
    the working directory that does (the framework installed from a wheel, used inside a checkout), else the working
    directory (the plugin then stays inert: see :func:`is_repo_root`)."""
    if os.environ.get("ACESTEP_PARITY_ROOT"):
        return Path(os.environ["ACESTEP_PARITY_ROOT"]).expanduser().resolve()
    for candidate in (Path(__file__).resolve().parent.parent, *[Path.cwd(), *Path.cwd().parents]):
        if is_repo_root(candidate):
            return candidate
    return Path.cwd()


def is_repo_root(path: Path) -> bool:
    """True where ``path`` holds the project's cases and their tolerance file."""
    return (Path(path) / "cases" / "tolerances.json").is_file()


REPO_ROOT = find_repo_root()
CASES_DIR = REPO_ROOT / "cases"
GOLDEN_DIR = REPO_ROOT / "golden"
TOLERANCE_FILE = CASES_DIR / "tolerances.json"


def cache_dir() -> Path:
    """``$ACESTEP_PARITY_CACHE`` or ``<repo>/.cache`` (git-ignored)."""
    return Path(os.environ.get("ACESTEP_PARITY_CACHE", REPO_ROOT / ".cache"))


@contextmanager
def file_lock(path: Path):
    """An exclusive lock so parallel pytest-xdist workers build a shared artifact once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_atomically(target: Path, lock: Path, is_complete: Callable[[], bool], build: Callable[[Path], None]) -> Path:
    """``target``, built once across processes (pytest-xdist workers, concurrent backends).

    Reused when ``is_complete()``; otherwise, under the file ``lock``, checked again (another process may have
    just built it), then ``build(tmp)`` writes into a temporary sibling folder that replaces a stale ``target`` by
    one rename, so no reader ever sees a half-built folder; the temporary folder is removed whatever happens."""
    target = Path(target)
    if is_complete():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        if is_complete():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_synthetic_checkpoint(preset_name: str = "tiny", root: Path | None = None) -> Path:
    """The cached synthetic checkpoint for ``preset_name``, generated on first use (atomically)."""
    from acestep_parity.synth.generate import MANIFEST, generate, generator_digest
    from acestep_parity.synth.presets import get_preset

    preset = get_preset(preset_name)
    base = Path(root) if root else cache_dir() / "checkpoints"
    target = base / f"synth-{preset.name}"

    def complete() -> bool:
        """Present and made from this preset by this generator (a cache from before the LM planner lacks
        acestep-5Hz-lm-0.6B/; one from an older preset records another preset_config, one from older generator code
        another ``generator`` digest)."""
        import json
        from dataclasses import asdict

        if not (target / MANIFEST).is_file() or not (target / "acestep-5Hz-lm-0.6B" / "config.json").is_file():
            return False
        recorded = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
        return (recorded.get("preset_config") == json.loads(json.dumps(asdict(preset)))
                and recorded.get("generator") == generator_digest())

    return build_atomically(target, base / f".synth-{preset.name}.lock", complete, lambda tmp: generate(preset, tmp))


def resolve_checkpoint_dir(option: str | None, check: bool = True) -> Path:
    """``--checkpoint-dir`` / ``$ACESTEP_CHECKPOINT_DIR``, else the tiny synthetic checkpoint. A given folder is
    checked first (configs and safetensors headers, seconds): a wrong one is one ``CheckpointError`` naming what is
    missing and the likely right folder, never a traceback after minutes of loading."""
    value = option or os.environ.get("ACESTEP_CHECKPOINT_DIR")
    if value:
        root = Path(value).expanduser().resolve()
        if check:
            from acestep_parity.checkpoint_check import require_checkpoint

            require_checkpoint(root)
        return root
    return ensure_synthetic_checkpoint("tiny")
