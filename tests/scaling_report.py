"""The scaling benchmarks' table (``tests/test_benchmarks_scaling.py``): their rows are kept on the run's config
(not in a module global), and ``tests/conftest.py`` prints the table and draws the time-vs-T plot when the run
ends, whatever order the benchmarks ran in. The lines are a pure function of the rows, unit-tested on given
numbers."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

SECONDS = (10, 30, 120)
FRAMES_PER_SECOND = 25  # 48 kHz / 1920
PROFILES = ("fp16", "int8_dynamic", "int8_static")
# who runs one DiT step: "<backend>" on fp32 or "<backend>-<profile>" (ids read well under -k "dit and int8_dynamic")
DIT_RUNNERS = ("torch", "py_ort", "rust", *(f"py_ort-{p}" for p in PROFILES))
# fresh-process runs (wall time, peak RSS): the reference, and both ONNX runtimes on every profile
E2E_RUNNERS = ("torch", *(f"{b}-{p}" for b in ("py_ort", "rust") for p in ("fp32", *PROFILES)))
E2E_SECONDS = (10, 30)  # torch decodes 120 s in 24 VAE tiles (minutes each at real width): end to end stops at 30 s


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


def summary_lines(table: ScalingTable) -> list[str]:
    """Roofline (where SGEMM was measured), ratios against torch, peak RSS and artifact sizes, in table order."""
    rates, lines = table.sgemm_gflops, []
    best = max(rates.values()) if rates else None
    if rates:
        lines.append(f"SGEMM (2048^3 fp32): numpy {rates['numpy']:.0f} GFLOP/s, ONNX Runtime {rates['ort']:.0f} "
                     f"GFLOP/s (roofline = the DiT step's FLOPs / {best:.0f} GFLOP/s)")
    for seconds, runner, row, ratio in _against_torch(table.rows, "dit_step", SECONDS, DIT_RUNNERS):
        roofline = ""
        if best:
            roof = row["gflop"] / best
            roofline = f"; roofline {roof:.3f} s = {roof / row['mean_s']:.0%}"
        lines.append(f"DiT step {seconds:4d} s (T={row['frames']}, {row['gflop']:.1f} GFLOP) {runner:20s} "
                     f"{row['mean_s']:.3f} s{ratio}{roofline}")
    for seconds, runner, row, ratio in _against_torch(table.rows, "end_to_end", E2E_SECONDS, E2E_RUNNERS):
        peak = f"{row['peak_rss_mb']:.0f} MB" if row.get("peak_rss_mb") else "n/a"
        lines.append(f"end to end {seconds:3d} s {runner:20s} generate {row['mean_s']:.2f} s{ratio} "
                     f"(load {row['load_s']:.1f} s), peak RSS {peak}")
    for r in table.rows:
        if r["graph"] not in ("dit_step", "end_to_end"):
            lines.append(f"{r['graph']:14s} {r['backend']:12s} T={r['frames']:5d}: {r['mean_s']:.2f} s")
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
