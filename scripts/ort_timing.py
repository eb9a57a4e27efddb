"""Times of the graphs on the ONNX Runtime this interpreter imports, for comparing ORT releases side by side.

    python scripts/ort_timing.py --onnx-dir DIR [--int8-dit FILE] [--song] [--rounds 3] [--out FILE.json]

Run it once per ONNX Runtime (a second virtual environment with another ``onnxruntime`` wheel and
``PYTHONPATH=.:runtimes/py_ort``), alternating, on the same folder; docs/performance.md holds the table. It times
one DiT step at T = 750 (random inputs, L_enc = 300), one VAE call on a 256-frame tile, the SGEMM rate, an int8 DiT
step when ``--int8-dit`` names one, and with ``--song`` a whole 30 s text2music song through py_ort (text, DiT,
VAE, after loading). Best of ``--rounds`` after a warm-up, with the runtimes' session options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnxruntime as ort

from acestep_ort.session_manager import SessionConfig
from acestep_parity.roofline import sgemm_rates

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_profile import dit_feeds, vae_feeds  # noqa: E402  (the same random inputs as the op profile)


def best_of(call, rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def graph_time(path: Path, feeds: dict, rounds: int) -> float:
    session = ort.InferenceSession(str(path), SessionConfig().session_options(), providers=["CPUExecutionProvider"])
    return best_of(lambda: session.run(None, feeds), rounds)


def song_time(onnx_dir: Path) -> float:
    """A 30 s text2music_01 song through py_ort's engine, after loading (one run)."""
    import dataclasses

    from acestep_ort import load_engine
    from acestep_ort.host.case import load_case

    case = load_case(Path(__file__).resolve().parents[1] / "cases" / "text2music_01.json")
    request = dataclasses.replace(case, duration=30.0).request()
    engine = load_engine(onnx_dir)
    start = time.perf_counter()
    engine.generate(request)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-dir", required=True, type=Path)
    parser.add_argument("--int8-dit", type=Path)
    parser.add_argument("--song", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    manifest = json.loads((args.onnx_dir / "manifest.json").read_text(encoding="utf-8"))
    hidden = int(manifest["config_dims"]["H"])
    row = {"onnxruntime": ort.__version__, "sgemm_gflops": sgemm_rates()["ort"]}
    row["dit_step_750_s"] = graph_time(args.onnx_dir / "dit_decoder.onnx", dit_feeds(hidden, 750), args.rounds)
    row["vae_tile_256_s"] = graph_time(args.onnx_dir / "vae_decoder.onnx", vae_feeds(256), args.rounds)
    if args.int8_dit:
        row["int8_dit_step_750_s"] = graph_time(args.int8_dit, dit_feeds(hidden, 750), args.rounds)
    if args.song:
        row["song_30s_s"] = song_time(args.onnx_dir)
    print(json.dumps(row))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
