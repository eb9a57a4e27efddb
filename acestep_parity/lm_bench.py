"""5 Hz LM decode speed: torch reference vs the ONNX Runtime graphs, KV cache on, one process per backend.

``python -m acestep_parity.lm_bench --preset tiny`` uses the cached tiny checkpoint and its exported graphs;
``--preset full`` writes a real-width LM (Qwen3-0.6B widths, the 65,535 audio-code tokens, random weights) into
``--work`` (default ``$TMPDIR/acestep-lm-full``), exports ``lm_prefill``/``lm_decode`` there once, then measures.
Each backend runs in its own process (``--backend``), which reports prefill time, decode ms/token and tokens/s
over ``--steps`` cached decode steps after the simple_mode_01 prompt, and its peak RSS (VmHWM). Threads are pinned
(``--threads``, default 1) so the two backends compare on the same cores. Nothing is asserted; numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare_full(work: Path) -> tuple[Path, Path]:
    """A real-width LM folder and its two graphs under ``work`` (written once)."""
    import dataclasses

    from acestep_parity import paths
    from acestep_parity.synth.lm import LM_DIR, write_lm
    from acestep_parity.synth.presets import FULL_LM

    root, onnx_dir = work / "checkpoint", work / "onnx"
    if not (root / LM_DIR / "model.safetensors").is_file():
        write_lm(dataclasses.replace(FULL_LM), root / LM_DIR, 20260404)
    if not (onnx_dir / "lm_decode.onnx").is_file():
        from acestep_parity.checkpoint import load_lm, read_json
        from acestep_parity.exporters.export import save_graph, trace_graph
        from acestep_parity.exporters.specs import GRAPH_SPECS

        tiny = paths.ensure_synthetic_checkpoint("tiny")
        lm, cfg = load_lm(root)
        models = SimpleNamespace(lm=lm, lm_config=cfg, silence_latent=None,
                                 dit_config=read_json(tiny / "acestep-v15-turbo" / "config.json"),
                                 text_config=read_json(tiny / "Qwen3-Embedding-0.6B" / "config.json"))
        for name in ("lm_prefill", "lm_decode"):
            start = time.perf_counter()
            record = save_graph(trace_graph(GRAPH_SPECS[name], models), onnx_dir)
            print(f"exported {name} in {time.perf_counter() - start:.0f} s "
                  f"({sum(f['bytes'] for f in record['files']) / 1e9:.2f} GB)", file=sys.stderr)
        (onnx_dir / LM_DIR).mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "genres_vocab.txt"):
            (onnx_dir / LM_DIR / name).write_bytes((root / LM_DIR / name).read_bytes())
    return root, onnx_dir


def _measure(backend: str, root: Path, onnx_dir: Path, steps: int, threads: int) -> dict:
    import numpy as np

    from acestep_ort.host import lm_prompt
    from acestep_ort.host.lm_tokenizer import LM_DIR, FastTokenizer

    tok = FastTokenizer(root / LM_DIR)
    prompt = np.asarray(tok.encode_prompt(lm_prompt.inspiration_prompt("a happy birthday song for my sister", False)),
                        dtype=np.int64)
    load_start = time.perf_counter()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        from acestep_parity.torch_ref.lm import TorchLm

        engine = TorchLm(root)
    else:
        from acestep_ort.lm import OrtLm
        from acestep_ort.session_manager import SessionConfig

        engine = OrtLm(onnx_dir, SessionConfig(intra_op_threads=threads))
    load_s = time.perf_counter() - load_start
    engine.lm_start(prompt)  # warm-up
    engine.lm_next(int(prompt[-1]))
    start = time.perf_counter()
    logits = engine.lm_start(prompt)
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        logits = engine.lm_next(int(np.argmax(logits)))
    decode_s = time.perf_counter() - start
    return {"backend": backend, "prompt_tokens": int(prompt.size), "steps": steps, "threads": threads,
            "load_s": round(load_s, 2), "prefill_ms": round(prefill_s * 1e3, 2),
            "decode_ms_per_token": round(decode_s / steps * 1e3, 3), "tokens_per_s": round(steps / decode_s, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "acestep-lm-full"))
    parser.add_argument("--backend", choices=("torch", "py_ort"), help="measure one backend in this process")
    parser.add_argument("--root")
    parser.add_argument("--onnx")
    args = parser.parse_args(argv)
    if args.backend:
        print(json.dumps(_measure(args.backend, Path(args.root), Path(args.onnx), args.steps, args.threads)))
        return 0
    if args.preset == "tiny":
        from acestep_parity import paths
        from acestep_parity.checkpoint import checkpoint_id, file_hashes
        from acestep_parity.exporters.export import ensure_artifacts

        root = paths.ensure_synthetic_checkpoint("tiny")
        hashes = file_hashes(root)
        onnx_dir = ensure_artifacts(root, checkpoint_id(root, hashes), hashes)
    else:
        root, onnx_dir = _prepare_full(Path(args.work))
    for backend in ("torch", "py_ort"):
        proc = subprocess.run([sys.executable, "-m", "acestep_parity.lm_bench", "--backend", backend, "--root",
                               str(root), "--onnx", str(onnx_dir), "--steps", str(args.steps), "--threads",
                               str(args.threads)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        print(proc.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
