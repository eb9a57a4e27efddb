"""The scaling benchmarks' table (``tests/test_benchmarks_scaling.py``): their rows are kept on the run's config
(not in a module global), and ``tests/conftest.py`` prints the table and draws the time-vs-T plot when the run
ends, whatever order the benchmarks ran in. The lines are a pure function of the rows, unit-tested on given
numbers."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

SECONDS = (10, 30, 120, 240)
FRAMES_PER_SECOND = 25  # 48 kHz / 1920
PROFILES = ("fp16", "int8_dynamic", "int8_static")
# who runs one DiT step: "<backend>" on fp32 or "<backend>-<profile>" (ids read well under -k "dit and int8_dynamic")
DIT_RUNNERS = ("torch", "py_ort", "rust", *(f"py_ort-{p}" for p in PROFILES))
# fresh-process runs (wall time, peak RSS): the reference, and both ONNX runtimes on every profile
E2E_RUNNERS = ("torch", *(f"{b}-{p}" for b in ("py_ort", "rust") for p in ("fp32", *PROFILES)))
E2E_SECONDS = (10, 30, 120, 240)
# torch decodes 120 s in 24 VAE tiles of minutes each at real width, and each profile's long song repeats the fp32
# one's VAE: beyond 30 s only the fp32 runs of the two ONNX runtimes go end to end (the table says so)
E2E_LONG_RUNNERS = ("py_ort-fp32", "rust-fp32")
E2E_LONG_FROM = 120


def e2e_runners(seconds: int) -> tuple[str, ...]:
    """Who runs a whole song of ``seconds`` (see E2E_LONG_RUNNERS)."""
    return E2E_RUNNERS if seconds < E2E_LONG_FROM else E2E_LONG_RUNNERS


@dataclass
class ScalingTable:
    """What this run's scaling benchmarks measured: one row per measurement, the SGEMM rates (the roofline's
    denominator) and the artifact sizes per profile, where the SGEMM benchmark ran."""

    rows: list[dict] = field(default_factory=list)
    sgemm_gflops: dict[str, float] = field(default_factory=dict)
    artifact_bytes: dict[str, dict[str, int]] = field(default_factory=dict)


SCALING = pytest.StashKey[ScalingTable]()


def scaling_table(config: pytest.Config) -> ScalingTable:
    """The run's table (one per pytest process: under ``-n`` each worker keeps its own, and none is printed)."""
    return config.stash.setdefault(SCALING, ScalingTable())


def _against_torch(rows: Sequence[dict], graph: str, lengths, runners) -> Iterator[tuple[int, str, dict, str]]:
    """(seconds, runner, row, ", / torch R" or "") for every measured row of ``graph``, in table order."""
    by_key = {(r["backend"], r["seconds"]): r for r in rows if r["graph"] == graph}
    for seconds in lengths:
        reference = by_key.get(("torch", seconds))
        for runner in runners:
            row = by_key.get((runner, seconds))
            if row is not None:
                ratio = f", / torch {row['mean_s'] / reference['mean_s']:.2f}" if reference else ""
                yield seconds, runner, row, ratio


def _floor(seconds: float, gflop: float | None, rate: float | None) -> str:
    """", / roofline R" (time / (FLOPs / SGEMM rate): 1 is the fp32 floor) where both are known."""
    return f", / roofline {seconds / (gflop / rate):.2f}" if gflop and rate else ""


def summary_lines(table: ScalingTable) -> list[str]:
    """Roofline (where SGEMM was measured), ratios against torch and the roofline, per-stage times of the whole
    songs, peak RSS and artifact sizes, in table order."""
    rates, lines = table.sgemm_gflops, []
    best = max(rates.values()) if rates else None
    if rates:
        lines.append(f"SGEMM (2048^3 fp32): numpy {rates['numpy']:.0f} GFLOP/s, ONNX Runtime {rates['ort']:.0f} "
                     f"GFLOP/s (roofline = a stage's FLOPs / {best:.0f} GFLOP/s; / roofline = time / that)")
    for seconds, runner, row, ratio in _against_torch(table.rows, "dit_step", SECONDS, DIT_RUNNERS):
        lines.append(f"DiT step {seconds:4d} s (T={row['frames']}, {row['gflop']:.1f} GFLOP) {runner:20s} "
                     f"{row['mean_s']:.3f} s{ratio}{_floor(row['mean_s'], row['gflop'], best)}")
    for seconds, runner, row, ratio in _against_torch(table.rows, "end_to_end", E2E_SECONDS, E2E_RUNNERS):
        peak = f"{row['peak_rss_mb']:.0f} MB" if row.get("peak_rss_mb") else "n/a"
        stages = ""
        if row.get("dit_s") is not None and row.get("vae_s") is not None:
            stages = (f"; DiT {row['dit_s']:.1f} s{_floor(row['dit_s'], row.get('dit_gflop'), best)}, "
                      f"VAE {row['vae_s']:.1f} s{_floor(row['vae_s'], row.get('vae_gflop'), best)}")
        lines.append(f"end to end {seconds:3d} s {runner:20s} generate {row['mean_s']:.2f} s{ratio}"
                     f"{_floor(row['mean_s'], row.get('gflop'), best)} (load {row['load_s']:.1f} s), "
                     f"peak RSS {peak}{stages}")
    long_song = [s for s in E2E_SECONDS if s >= E2E_LONG_FROM]
    if any(r["graph"] == "end_to_end" and r["seconds"] in long_song for r in table.rows):
        lines.append(f"end to end from {E2E_LONG_FROM} s: {', '.join(E2E_LONG_RUNNERS)} only (torch's upstream VAE "
                     "tiles take minutes each at real width; a profile's long song repeats the fp32 VAE)")
    for r in table.rows:
        if r["graph"] not in ("dit_step", "end_to_end"):
            lines.append(f"{r['graph']:14s} {r['backend']:12s} T={r['frames']:5d}: {r['mean_s']:.2f} s"
                         f"{_floor(r['mean_s'], r.get('gflop'), best)}")
    for profile, files in table.artifact_bytes.items():
        lines.append(f"artifact sizes {profile}: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in files.items()))
    return lines


def plot_png(rows: Sequence[dict]) -> bytes | None:
    """Two log-log panels: the DiT step per runner, and the VAE and end-to-end runs per backend and profile."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {"DiT step": {}, "VAE and end to end": {}}
    for r in rows:
        if r["graph"] == "dit_step":
            panels["DiT step"].setdefault(r["backend"], []).append((r["frames"], r["mean_s"]))
        elif r["graph"] in ("vae_upstream", "vae_budget", "end_to_end"):
            panels["VAE and end to end"].setdefault(f"{r['graph']} {r['backend']}", []).append(
                (r["frames"], r["mean_s"]))
    if not any(panels.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for name, points in sorted(series.items()):
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("latent frames T (25 per second)")
        ax.set_ylabel("seconds")
        if series:
            ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
