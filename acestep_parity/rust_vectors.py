"""Shared test vectors that hold the Rust host logic (``rust/acestep-core``) to the Python one.

Host logic exists twice (``runtimes/py_ort/acestep_ort/host`` and ``acestep-core``); these JSON files, written from the
Python implementation (and, for the noise, from torch itself), are read by ``cargo test``. They are committed
under ``rust/acestep-core/tests/vectors/``; ``tests/test_rust_runtime.py`` regenerates them and fails when
the committed ones are stale. Regenerate with::

    python -m acestep_parity.rust_vectors            # needs torch for noise.json

``lm_fsm.json`` (the planner FSM, parsing and prompt) comes from :mod:`acestep_parity.lm_vectors` and needs the
synthetic checkpoint's LM tokenizer (generated on first use) and the committed simple_mode goldens.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from acestep_ort.host import audio, latents, prompts, schedule, tiling
from acestep_ort.host.case import CaseError, discover_cases, load_case, valid_cases
from acestep_parity import paths

VECTORS_DIR = paths.REPO_ROOT / "rust" / "acestep-core" / "tests" / "vectors"

NOISE_SEEDS = (0, 42, 2**32 - 1, 2**63 - 1)
NOISE_SMALL = (1, 2, 3, 5, 15, 16, 17, 31, 32, 33, 100)
# Real latent sizes T*64: the tiny cases' T (150, 155, 300), a 120 s default (3000) and the 600 s maximum.
NOISE_LARGE_FRAMES = (150, 155, 300, 3000, 15000)


def _bits(array: np.ndarray) -> list[str]:
    return [f"{v:08x}" for v in np.asarray(array, dtype=np.float32).reshape(-1).view(np.uint32).tolist()]


def noise_vectors() -> dict:
    """``torch.randn`` bit patterns for small sizes and SHA-256 digests of the float32 bytes for real sizes."""
    import torch

    def randn(numel: int, seed: int) -> np.ndarray:
        g = torch.Generator("cpu").manual_seed(seed)
        return torch.randn((numel,), generator=g, dtype=torch.float32).numpy()

    small = [{"seed": s, "numel": n, "bits": _bits(randn(n, s))} for s in NOISE_SEEDS for n in NOISE_SMALL]
    large = [{"seed": s, "frames": t, "numel": t * 64,
              "sha256": hashlib.sha256(randn(t * 64, s).astype("<f4").tobytes()).hexdigest()}
             for s in NOISE_SEEDS for t in NOISE_LARGE_FRAMES]
    # The torch version only: the bits do not depend on the CPU (a capability here made the file differ per machine).
    return {"source": f"torch {torch.__version__}",
            "small": small, "large": large}


PROMPT_INPUTS = [
    {"caption": "plain caption", "lyrics": "", "language": "unknown", "bpm": None, "keyscale": "",
     "timesignature": "", "duration": None},
    {"caption": "# Instruction\nold\n\n# Caption\n  wrapped caption body \n\n# Metas\n- bpm: 90\n",
     "lyrics": "[Instrumental]", "language": "en", "bpm": 90, "keyscale": " ", "timesignature": "N/A",
     "duration": 30.9},
    {"caption": "# Instruction\nx\n# Caption\nno metas after it\n", "lyrics": "la\u3000la", "language": "ja",
     "bpm": 0, "keyscale": "D\u266d major", "timesignature": " ", "duration": 0.0},
    {"caption": "tabs\tand <|endoftext|> inside", "lyrics": "<|im_start|>x<|im_end|>", "language": "fr",
     "bpm": 300, "keyscale": "E minor", "timesignature": "6", "duration": 599.99},
    {"caption": "# Caption only, no instruction", "lyrics": "\u00e9\u0301 combining", "language": "unknown",
     "bpm": 30, "keyscale": "F# minor", "timesignature": "3", "duration": 0.5},
]
PROMPT_INSTRUCTIONS = ("Fill the audio semantic mask based on the given conditions:", "Generate music")


def prompt_vectors() -> list[dict]:
    out = []
    requests = [dict(p) for p in PROMPT_INPUTS]
    for case in discover_cases(paths.CASES_DIR):
        if case.task == "text2music":
            requests.append({"case": case.id, "caption": case.caption, "lyrics": case.lyrics,
                             "language": case.language, "bpm": case.bpm, "keyscale": case.keyscale,
                             "timesignature": case.timesignature, "duration": case.duration})
    for req in requests:
        metas = prompts.metas_string(req["bpm"], req["keyscale"], req["timesignature"], req["duration"])
        for instruction in PROMPT_INSTRUCTIONS:
            out.append({**req, "instruction": instruction, "metas": metas,
                        "caption_prompt": prompts.caption_prompt(req["caption"], metas, instruction),
                        "lyric_prompt": prompts.lyric_prompt(req["lyrics"], req["language"])})
    return out


DURATIONS = (None, 0.0, 0.01, 0.05, 1.0, 3.0, 5.0, 5.12, 5.15, 6.0, 6.2, 6.25, 6.35, 12.0, 30.9, 119.99, 240.0,
             599.99, 600.0)


def latent_vectors() -> list[dict]:
    return [{"duration": d, "frames": latents.latent_frames(d)} for d in DURATIONS]


SCHEDULE_INPUTS = [
    {"shift": s, "timesteps": None} for s in (0.1, 1.0, 1.5, 1.51, 2.0, 2.5, 2.9, 3.0, 7.0)
] + [
    {"shift": 3.0, "timesteps": ts} for ts in (
        [0.97, 0.76, 0.615, 0.5, 0.395, 0.28, 0.18, 0.085, 0],
        [0, 0], [0.5, 0, 0.25, 0], [1.0] * 25, [0.1, 0.0625, 0.0], [0.9772727272727273, 0.6875, 0.3125],
    )
]


def schedule_vectors() -> list[dict]:
    out = []
    rng = np.random.default_rng(7)
    for inp in SCHEDULE_INPUTS:
        sched = schedule.resolve_schedule(inp["shift"], inp["timesteps"])
        xt = rng.standard_normal(16).astype(np.float32)
        vt = rng.standard_normal(16).astype(np.float32)
        updates = [_bits(schedule.ode_update(xt, vt, sched, i)) for i in range(len(sched))]
        out.append({**inp, "schedule": sched, "schedule_f32": _bits(schedule.schedule_f32(sched)),
                    "dts": schedule.step_dts(sched), "xt": _bits(xt), "vt": _bits(vt), "updates": updates})
    return out


def tiling_vectors() -> list[dict]:
    out = []
    for frames, chunk, overlap in [(1, 256, 64), (128, 256, 64), (256, 256, 64), (257, 256, 64), (300, 256, 64),
                                   (3000, 256, 64), (15000, 256, 64), (100, 64, 64), (100, 8, 64), (50, 16, 2)]:
        try:
            tiles = [[t.win_start, t.win_end, t.core_start, t.core_end]
                     for t in tiling.plan_tiles(frames, chunk, overlap)]
        except ValueError as exc:
            tiles = str(exc)
        out.append({"frames": frames, "chunk": chunk, "overlap": overlap, "tiles": tiles})
    return out


def vae_chunking_vectors() -> dict:
    """Decoder widths, budget chunks, settings parsing and the resulting plans (``tiling.VaeChunking``)."""
    shapes = [tiling.VaeShape(), tiling.VaeShape(8), tiling.VaeShape(16, (1, 2, 3), (2, 5, 3))]
    out: dict = {"shapes": [{"decoder_channels": v.decoder_channels, "channel_multiples": list(v.channel_multiples),
                             "downsampling_ratios": list(v.downsampling_ratios), "widths": v.activation_widths(),
                             "frame_bytes": v.frame_bytes()} for v in shapes]}
    budgets = []
    for memory_mb, frame_bytes, max_frames, overlap in [(4096, shapes[0].frame_bytes(), 8192, 64),
                                                       (4096, shapes[1].frame_bytes(), 8192, 64),
                                                       (1, 1 << 20, 8192, 64), (10**7, 1, 8192, 64),
                                                       (512, 1 << 20, 8192, 16), (0, 1, 8192, 64),
                                                       (100, 0, 8192, 64), (100, 1, 100, 64)]:
        try:
            chunk: int | str = tiling.budget_chunk(memory_mb, frame_bytes, max_frames, overlap)
        except ValueError as exc:
            chunk = str(exc)
        budgets.append({"memory_mb": memory_mb, "frame_bytes": frame_bytes, "max_frames": max_frames,
                        "overlap": overlap, "chunk": chunk})
    out["budgets"] = budgets
    settings = []
    for mode, memory in [(None, None), ("upstream", None), ("budget", "300"), (" budget ", " 64 "), ("", ""),
                         ("tiles", None), (None, "lots"), (None, "-5"), (None, "0"), ("upstream", "1.5"), (None, "+5")]:
        try:
            chunking = tiling.VaeChunking.parse(mode, memory)
            result: dict | str = {"mode": chunking.mode, "memory_mb": chunking.memory_mb,
                                  "chunk": [chunking.chunk_size(v) for v in shapes]}
        except ValueError as exc:
            result = str(exc)
        settings.append({"tiling": mode, "memory_mb": memory, "result": result})
    out["settings"] = settings
    plans = []
    for frames in (1, 256, 300, 3000, 15000):
        for memory_mb in (16, 256, 4096):
            chunk = tiling.VaeChunking("budget", memory_mb).chunk_size(shapes[1])
            plans.append({"frames": frames, "memory_mb": memory_mb, "chunk": chunk,
                          "tiles": [[t.win_start, t.win_end, t.core_start, t.core_end]
                                    for t in tiling.plan_tiles(frames, chunk)]})
    out["plans"] = plans
    return out


def audio_vectors() -> list[dict]:
    rng = np.random.default_rng(11)
    out = []
    for scale in (0.0, 1e-7, 0.3, 1.0, 1.7, 40.0):
        x = (rng.standard_normal((2, 2, 37)) * scale).astype(np.float32)
        clipped = audio.anti_clip(x)
        out.append({"batch": 2, "input": _bits(x), "anti_clip": _bits(clipped),
                    "normalized": _bits(audio.normalize_peak(clipped))})
    return out


BAD_CASES: dict[str, str] = {
    "not_json": "{",
    "top_list": "[1, 2]",
    "unknown_field": '{"id": "unknown_field", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], '
                     '"colour": "red"}',
    "missing_seeds": '{"id": "missing_seeds", "task": "text2music", "caption": "c", "duration": 5}',
    "bool_bpm": '{"id": "bool_bpm", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], '
                '"bpm": true}',
    "str_duration": '{"id": "str_duration", "task": "text2music", "caption": "c", "duration": "5", "seeds": [1]}',
    "float_bpm": '{"id": "float_bpm", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], '
                 '"bpm": 120.0}',
    "bool_seeds": '{"id": "bool_seeds", "task": "text2music", "caption": "c", "duration": 5, "seeds": true}',
    "int_caption": '{"id": "int_caption", "task": "text2music", "caption": 3, "duration": 5, "seeds": [1]}',
    "wrong_id": '{"id": "other", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1]}',
    "bad_task": '{"id": "bad_task", "task": "remix", "caption": "c", "duration": 5, "seeds": [1]}',
    "long_duration": '{"id": "long_duration", "task": "text2music", "caption": "c", "duration": 601, "seeds": [1]}',
    "zero_duration": '{"id": "zero_duration", "task": "text2music", "caption": "c", "duration": 0.0, "seeds": [1]}',
    "tiny_duration": '{"id": "tiny_duration", "task": "text2music", "caption": "c", "duration": -1e-05, '
                     '"seeds": [1]}',
    "no_seeds": '{"id": "no_seeds", "task": "text2music", "caption": "c", "duration": 5, "seeds": []}',
    "nine_seeds": '{"id": "nine_seeds", "task": "text2music", "caption": "c", "duration": 5, '
                  '"seeds": [1,2,3,4,5,6,7,8,9]}',
    "negative_seed": '{"id": "negative_seed", "task": "text2music", "caption": "c", "duration": 5, "seeds": [-1]}',
    "float_seed": '{"id": "float_seed", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1.5]}',
    "str_seed": '{"id": "str_seed", "task": "text2music", "caption": "c", "duration": 5, "seeds": ["it\'s"]}',
    "huge_seed": '{"id": "huge_seed", "task": "text2music", "caption": "c", "duration": 5, '
                 '"seeds": [9223372036854775808]}',
    "slow_bpm": '{"id": "slow_bpm", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], "bpm": 29}',
    "zero_shift": '{"id": "zero_shift", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], '
                  '"shift": 0}',
    "empty_timesteps": '{"id": "empty_timesteps", "task": "text2music", "caption": "c", "duration": 5, '
                       '"seeds": [1], "timesteps": []}',
    "bool_timestep": '{"id": "bool_timestep", "task": "text2music", "caption": "c", "duration": 5, '
                     '"seeds": [1], "timesteps": [0.5, false]}',
    "big_timestep": '{"id": "big_timestep", "task": "text2music", "caption": "c", "duration": 5, '
                    '"seeds": [1], "timesteps": [1.5]}',
    "ogg_format": '{"id": "ogg_format", "task": "text2music", "caption": "c", "duration": 5, "seeds": [1], '
                  '"output_format": "ogg"}',
    "empty_caption": '{"id": "empty_caption", "task": "text2music", "caption": "", "duration": 5, "seeds": [1]}',
    "no_duration": '{"id": "no_duration", "task": "text2music", "caption": "c", "seeds": [1]}',
    "null_duration": '{"id": "null_duration", "task": "text2music", "caption": "c", "duration": null, "seeds": [1]}',
    "negative_duration": '{"id": "negative_duration", "task": "text2music", "caption": "c", "duration": -3, '
                         '"seeds": [1]}',
    "bool_duration": '{"id": "bool_duration", "task": "text2music", "caption": "c", "duration": false, '
                     '"seeds": [1]}',
    "no_caption": '{"id": "no_caption", "task": "text2music", "duration": 5, "seeds": [1]}',
    "no_query": '{"id": "no_query", "task": "simple_mode", "duration": 5, "seeds": [1]}',
    "null_timesteps": '{"id": "null_timesteps", "task": "text2music", "caption": "c", "duration": 5, '
                      '"seeds": [1], "timesteps": null, "bpm": null}',
}


def case_error_vectors() -> list[dict]:
    """Each malformed case file and Python's message for it (the ``<path>: `` prefix removed; null = valid)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in BAD_CASES.items():
            path = Path(tmp) / f"{name}.json"
            path.write_text(text, encoding="utf-8")
            try:
                load_case(path)
                message = None
            except CaseError as exc:
                message = str(exc).removeprefix(f"{path}: ")
            out.append({"name": name, "json": text, "message": message})
    return out


def case_vectors() -> list[dict]:
    """What load_case makes of every committed case file."""
    return [{"id": c.id, "task": c.task, "caption": c.caption, "lyrics": c.lyrics, "language": c.language,
             "bpm": c.bpm, "keyscale": c.keyscale, "timesignature": c.timesignature, "duration": c.duration,
             "seeds": list(c.seeds), "shift": c.shift, "timesteps": list(c.timesteps) if c.timesteps else None,
             "output_format": c.output_format, "sha256": c.sha256}
            for c in valid_cases(discover_cases(paths.CASES_DIR))]


def build(with_noise: bool = True) -> dict[str, dict | list]:
    """Every vector file by name (``noise.json`` only when torch is importable and ``with_noise``)."""
    files: dict[str, dict | list] = {
        "prompts.json": prompt_vectors(), "latents.json": latent_vectors(), "schedules.json": schedule_vectors(),
        "tiling.json": tiling_vectors(), "audio.json": audio_vectors(), "case_errors.json": case_error_vectors(),
        "cases.json": case_vectors(), "vae_chunking.json": vae_chunking_vectors(),
    }
    if with_noise:
        files["noise.json"] = noise_vectors()
    from acestep_parity.lm_vectors import lm_fsm_vectors

    lm = lm_fsm_vectors()
    if lm is not None:
        files["lm_fsm.json"] = lm
    return files


def render(data: dict | list) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    VECTORS_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (VECTORS_DIR / name).write_text(render(data), encoding="utf-8")
        print(f"wrote {VECTORS_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
