"""Check a checkpoint folder before loading it: headers only, every problem at once, one line each.

A real ACE-Step 1.5 checkpoint is tens of GB; a missing, truncated or mis-shaped file should be found in seconds,
not after minutes of loading. :func:`check_checkpoint` reads each config, builds the library modules from it with
their parameters on the meta device (no storage: the expected state-dict shapes cost nothing, even at full size),
reads each safetensors *header* (never the data) and compares, file by file and tensor by tensor:

- required files present (the upstream layout; the 5 Hz LM folder when it exists);
- configs are JSON objects with the fields the modules need;
- every tensor's byte range fits in the file (a truncated download) and matches its dtype and shape;
- key sets equal (upstream names mapped as the loader maps them), shapes equal to what the config implies,
  floating-point dtypes;
- the silence latent's channels equal the DiT config's ``timbre_hidden_dim``.

It shares the loader's key mapping and module builders (:mod:`acestep_parity.checkpoint`), so "the check passes"
means "the strict load will find every key and shape".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from acestep_parity import checkpoint as ck

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MAX_LINES_PER_KIND = 8  # per file and kind of problem; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One finding: the file, the tensor or field (if any), and what was expected vs found."""

    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _capped(path: Path, lines: list[str]) -> list[Problem]:
    out = [Problem(path, line) for line in lines[:MAX_LINES_PER_KIND]]
    if len(lines) > MAX_LINES_PER_KIND:
        out.append(Problem(path, f"... and {len(lines) - MAX_LINES_PER_KIND} more like these"))
    return out


def _config(path: Path, problems: list[Problem]) -> dict | None:
    if not path.is_file():
        return None  # reported by the layout check
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem(path, f"not a valid JSON file ({exc})"))
        return None
    if not isinstance(value, dict):
        problems.append(Problem(path, f"expected a JSON object, found {type(value).__name__}"))
        return None
    return value


def _build(path: Path, problems: list[Problem], build, cfg: dict):
    """The modules ``build(cfg)`` makes, on the meta device; a config that cannot build them is a problem."""
    import torch

    try:
        with torch.no_grad(), ck.empty_modules():
            return build(cfg)
    except KeyError as exc:
        problems.append(Problem(path, f"field {exc.args[0]!r} is missing (the modules need it)"))
    except (TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, RuntimeError) as exc:
        problems.append(Problem(path, f"the fields do not describe a buildable model: {exc}"))
    return None


def _header(path: Path, problems: list[Problem]) -> dict[str, ck.LazyTensor] | None:
    """The header of a safetensors file, plus the truncation and byte-count checks that need no data read."""
    if not path.is_file():
        return None
    try:
        tensors = ck._load_safetensors(path)
    except ck.CheckpointError as exc:
        problems.append(Problem(path, f"unreadable safetensors header ({str(exc).split(': ', 1)[-1]})"))
        return None
    size = path.stat().st_size
    needed = max((t.end for t in tensors.values()), default=0)
    if needed > size:
        problems.append(Problem(path, f"truncated: {size} bytes on disk, the header's tensors need {needed}"))
    import numpy as np

    wrong = []
    for key, t in tensors.items():
        itemsize = 2 if t.dtype == "bfloat16" else np.dtype(t.dtype).itemsize
        want = int(np.prod(t.shape, dtype=np.int64)) * itemsize
        if t.end - t.start != want:
            wrong.append(f"tensor {key!r}: {t.end - t.start} bytes for {t.dtype}{list(t.shape)} (needs {want})")
    problems.extend(_capped(path, wrong))
    return tensors


def _compare(path: Path, config_path: Path, found: dict, module, problems: list[Problem],
             ignored: set[str] = frozenset(), skip_expected: set[str] = frozenset()) -> None:
    """Key sets, shapes (as ``config_path`` implies them) and dtypes of ``found`` against ``module``."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items() if k not in skip_expected}
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected and k not in ignored)
    shapes, dtypes = [], []
    for key in sorted(set(found) & set(expected)):
        tensor = found[key]
        if tuple(tensor.shape) != expected[key]:
            shapes.append(f"tensor {key!r}: expected shape {list(expected[key])} ({config_path.name}), "
                          f"found {list(tensor.shape)}")
        if tensor.dtype not in FLOAT_DTYPES:
            dtypes.append(f"tensor {key!r}: expected a float dtype ({', '.join(FLOAT_DTYPES)}), found {tensor.dtype}")
    problems.extend(_capped(path, [f"tensor {k!r}: missing (expected shape {list(expected[k])})" for k in missing]))
    problems.extend(_capped(path, [f"tensor {k!r}: unexpected (found shape {list(found[k].shape)})"
                                   for k in unexpected]))
    problems.extend(_capped(path, shapes))
    problems.extend(_capped(path, dtypes))


def _check_dit(root: Path, problems: list[Problem]) -> None:
    cfg_path, weights = root / ck.DIT_DIR / "config.json", root / ck.DIT_DIR / "model.safetensors"
    cfg = _config(cfg_path, problems)
    header = _header(weights, problems)
    if cfg is None:
        return
    modules = _build(cfg_path, problems, lambda c: {
        "transformer": ck.build_transformer(c), "condition_encoder": ck.build_condition_encoder(c),
        **dict(zip(("audio_tokenizer", "audio_detokenizer"), ck.build_audio_tokenizers(c), strict=True))}, cfg)
    if header is not None and modules is not None:
        grouped: dict[str, dict] = {name: {} for name in modules}
        stray = []
        for key, tensor in header.items():
            try:
                component, mapped = ck.map_upstream_key(key)
            except ck.CheckpointError as exc:
                stray.append(f"tensor {key!r}: {str(exc).split(': ', 1)[-1]}")
                continue
            grouped[component][mapped] = tensor
        problems.extend(_capped(weights, stray))
        for name, module in modules.items():
            # diffusers keeps the silence latent as a buffer; upstream ships it as silence_latent.pt
            _compare(weights, cfg_path, grouped[name], module, problems,
                     skip_expected={"silence_latent"} if name == "condition_encoder" else set())
    silence = root / ck.DIT_DIR / "silence_latent.pt"
    if silence.is_file():
        try:
            latent = ck.load_silence_latent(silence)
        except ck.CheckpointError as exc:
            problems.append(Problem(silence, str(exc).split(": ", 1)[-1]))
            return
        want = cfg.get("timbre_hidden_dim")
        if want is not None and latent.shape[1] != want:
            problems.append(Problem(silence, f"expected {want} channels (timbre_hidden_dim in {cfg_path}), "
                                             f"found {latent.shape[1]}"))


def _check_simple(root: Path, folder: str, weights_name: str, build, problems: list[Problem],
                  strip_model_prefix: bool = False, ignored: set[str] = frozenset()) -> None:
    cfg_path, weights = root / folder / "config.json", root / folder / weights_name
    cfg = _config(cfg_path, problems)
    header = _header(weights, problems)
    if cfg is None:
        return
    module = _build(cfg_path, problems, build, cfg)
    if header is None or module is None:
        return
    if strip_model_prefix and header and all(k.startswith("model.") or k in ignored for k in header):
        header = {k.removeprefix("model."): v for k, v in header.items()}
    if folder == ck.LM_DIR and cfg.get("tie_word_embeddings", False) and "lm_head.weight" not in header:
        if "model.embed_tokens.weight" in header:
            header = {**header, "lm_head.weight": header["model.embed_tokens.weight"]}
    _compare(weights, cfg_path, header, module, problems, ignored=ignored)


def check_checkpoint(root: Path) -> list[Problem]:
    """Every problem of an upstream-layout checkpoint folder, found from configs and headers alone."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, "not a folder")]
    problems = [Problem(root / rel, "missing") for rel in ck.REQUIRED_FILES if not (root / rel).is_file()]
    lm_folder = root / ck.LM_DIR
    if lm_folder.is_dir():
        problems += [Problem(lm_folder / name, "missing (the 5 Hz LM folder is present, so simple mode needs it)")
                     for name in ck.LM_FILES if not (lm_folder / name).is_file()]
    _check_dit(root, problems)
    _check_simple(root, ck.VAE_DIR, "diffusion_pytorch_model.safetensors", ck.build_vae, problems)
    _check_simple(root, ck.TEXT_DIR, "model.safetensors", ck.build_text_encoder, problems,
                  strip_model_prefix=True, ignored=ck._TEXT_IGNORED_KEYS)
    if lm_folder.is_dir():
        _check_simple(root, ck.LM_DIR, "model.safetensors", ck.build_lm, problems)
    return problems


COMPONENT_DIRS = (ck.DIT_DIR, ck.VAE_DIR, ck.TEXT_DIR, ck.LM_DIR)
MAX_LINES_IN_ERROR = 10


def likely_checkpoint_folder(root: Path) -> Path | None:
    """Where the checkpoint probably is when ``root`` is not it: the parent of a component subfolder
    (``…/acestep-v15-turbo``), or a folder up to two levels below ``root`` holding the layout (a repository
    root with ``checkpoints/``)."""
    root = Path(root)
    if root.name in COMPONENT_DIRS:
        return root.parent
    if not root.is_dir():
        return None
    for pattern in ("*", "*/*"):
        for candidate in sorted(root.glob(pattern)):
            if candidate.is_dir() and (candidate / ck.DIT_DIR / "config.json").is_file():
                return candidate
    return None


def require_checkpoint(root: Path) -> Path:
    """``root``, or :class:`~acestep_parity.checkpoint.CheckpointError` listing its problems (capped) and the
    likely right folder: every command given a checkpoint folder checks it in seconds before loading anything."""
    root = Path(root)
    problems = check_checkpoint(root)
    if not problems:
        return root
    hint = likely_checkpoint_folder(root)
    head = f"{root} is not a usable ACE-Step 1.5 checkpoint folder ({len(problems)} problem(s))"
    if hint is not None:
        head += f"; the checkpoint folder is probably {hint}"
    lines = [head + ":", *(f"  {p}" for p in problems[:MAX_LINES_IN_ERROR])]
    if len(problems) > MAX_LINES_IN_ERROR:
        lines.append(f"  ... and {len(problems) - MAX_LINES_IN_ERROR} more (`acestep-parity check-checkpoint {root}`)")
    raise ck.CheckpointError("\n".join(lines))
