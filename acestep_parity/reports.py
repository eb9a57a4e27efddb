"""Reports: rows as data first (metrics.json / metrics.csv), presentation second (HTML plots, terminal lines).

Each row is one case x step x tensor x pair x profile x metric with value, gate and verdict. Per case and pair,
the failure tag is the first pipeline stage (``parity.STAGES`` order) with a failing row.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from acestep_parity.parity import STAGES, Row

CSV_FIELDS = ("case", "step", "mode", "tensor", "pair", "profile", "metric", "value", "gate", "direction",
              "verdict", "stage", "gate_source", "nodeid")


def first_divergence(rows: list[Row]) -> dict[str, str | None]:
    """``{"case|pair|profile": first failing stage or None}``."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[f"{r.case}|{r.pair}|{r.profile}"].append(r)
    out = {}
    for key, group in sorted(groups.items()):
        failing = {r.stage for r in group if r.verdict == "fail"}
        out[key] = next((s for s in STAGES if s in failing), None)
    return out


def write_metrics(out_dir: Path, rows: list[Row]) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r.case, r.pair, r.profile, r.tensor, -1 if r.step is None else r.step,
                                       r.mode or "", r.metric))
    json_path, csv_path = out_dir / "metrics.json", out_dir / "metrics.csv"
    payload = {
        "rows": [asdict(r) for r in rows],
        "failure_tags": first_divergence(rows),
        "counts": {"rows": len(rows), "failed": sum(r.verdict == "fail" for r in rows)},
    }
    json_path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            d = asdict(r)
            writer.writerow({k: d[k] for k in CSV_FIELDS})
    return json_path, csv_path


def _tests(rows: list[Row]) -> set[str]:
    """The tests the rows come from (a test may check several tensors; a row without a test id counts alone)."""
    return {r.nodeid or f"{r.case}|{r.tensor}|{r.pair}|{r.profile}|{r.step}|{r.mode}" for r in rows}


def count_phrase(rows: list[Row]) -> str:
    """``"545 values in 333 tests, 16 values over the gate in 2 tests"``: values and tests counted apart (one
    failing test may hold several failing values)."""
    bad = [r for r in rows if r.verdict == "fail"]
    text = f"{len(rows)} values in {len(_tests(rows))} tests, "
    if not bad:
        return text + "none over the gate"
    failing_tests = len(_tests(bad))
    return text + (f"{len(bad)} value{'s' if len(bad) != 1 else ''} over the gate in {failing_tests} "
                   f"test{'s' if failing_tests != 1 else ''}")


def summary_lines(rows: list[Row], provenance: list[str] | None = None) -> list[str]:
    tags = first_divergence(rows)
    lines = [f"acestep-parity: {count_phrase(rows)}"]
    lines += [f"  {line}" for line in provenance or []]
    by_pair: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_pair[f"{r.pair} ({r.profile})"].append(r)
    for pair, cells in matrix(rows).items():
        group = by_pair[pair]
        bad_tensors: dict[str, int] = defaultdict(int)
        for r in group:
            if r.verdict == "fail":
                bad_tensors[r.tensor] += 1
        parts = [count_phrase(group)]
        if bad_tensors:
            parts[0] += " (" + ", ".join(f"{t} {n}" for t, n in sorted(bad_tensors.items())) + ")"
        vt = [r for r in cells.get("vt", []) if r.metric == "max_abs"]
        audio = [r for r in cells.get("audio", []) if r.metric == "snr_db"]
        worst = [f"vt max_abs {vt[0].value:.3g} (gate {vt[0].gate:g})"] if vt else []
        worst += [f"audio SNR {audio[0].value:.1f} dB (gate {audio[0].gate:g})"] if audio else []
        if worst:
            parts.append("worst " + ", ".join(worst))
        lines.append(f"  {pair}: " + "; ".join(parts))
    for key, tag in tags.items():
        if tag:
            case, pair, profile = key.split("|")
            lines.append(f"  {case} {pair} {profile}: first divergence at {tag}")
    return lines


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 6.0, height: float = 2.6, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def step_curves_png(rows: list[Row], case: str, pair: str, profile: str) -> str | None:
    """Per-step max_abs of vt/xt (teacher-forced and free-running) for one case, log scale, with gates."""
    series = defaultdict(dict)
    gates = {}
    for r in rows:
        if (r.case, r.pair, r.profile) == (case, pair, profile) and r.step is not None and r.metric == "max_abs":
            series[f"{r.tensor} {r.mode}"][r.step] = max(r.value, 1e-12)
            gates[r.tensor] = r.gate
    if not series:
        return None
    fig, axes = _figure()
    ax = axes[0][0]
    for label, points in sorted(series.items()):
        steps = sorted(points)
        ax.semilogy(steps, [points[s] for s in steps], marker="o", label=label)
    for _tensor, gate in gates.items():
        ax.axhline(gate, linestyle="--", linewidth=0.8, color="gray")
    ax.set_xlabel("step")
    ax.set_ylabel("max_abs")
    ax.set_title(f"{case} {pair} {profile}: per-step error (dashed: gate)")
    ax.legend(fontsize=7)
    return _png(fig)


MATRIX_TENSORS = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "noise", "schedule",
    "vt", "xt", "pred_latents", "audio",
)
_COLOURS = {"fail": "#f4b6b6", "near": "#f9e3a3", "pass": "#c8ebc4"}


def _worst(group: list[Row]) -> Row:
    """The row furthest from passing: the largest value of a ``max`` metric, the smallest of a ``min`` one."""
    return max(group, key=lambda r: r.value if r.direction == "max" else -r.value)


def _closeness(row: Row) -> float:
    """How much of the gate a passing value uses (1 = on the gate). dB metrics: 6 dB of margin counts as half."""
    if row.metric.endswith("_db"):
        return 10 ** (-(row.value - row.gate) / 20) if row.direction == "min" else 10 ** ((row.value - row.gate) / 20)
    if row.direction == "max":
        return 0.0 if row.gate == 0 and row.value == 0 else (row.value / row.gate if row.gate else float("inf"))
    return (1 - row.value) / (1 - row.gate) if row.gate < 1 and row.value <= 1 else 0.0


def matrix(rows: list[Row]) -> dict[str, dict[str, list[Row]]]:
    """``{pair: {tensor: [worst row per metric]}}`` over every case, step and mode."""
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(f"{r.pair} ({r.profile})", r.tensor, r.metric)].append(r)
    out: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for (pair, tensor, _metric), group in sorted(groups.items()):
        out[pair][tensor].append(_worst(group))
    return out


def matrix_html(rows: list[Row], provenance: list[str] | None = None) -> list[str]:
    """The pair x tensor matrix the HTML report opens with: the worst value of each gated metric against its
    gate, coloured (red: over the gate, amber: more than half of it used, green), failing cells linked to the
    list of their failing rows below. A ``~golden`` row compares with the frozen golden (possibly another CPU); the
    other rows are live pairs run in this session on this machine."""
    table = matrix(rows)
    if not table:
        return []
    tensors = [t for t in MATRIX_TENSORS if any(t in cells for cells in table.values())]
    tensors += sorted({t for cells in table.values() for t in cells} - set(tensors))
    head = "".join(f"<th>{t}</th>" for t in tensors)
    body, failures = [], []
    for pair, cells in table.items():
        kind = "golden (frozen)" if "~golden" in pair else "live (this machine)"
        line = [f"<tr><th style='text-align:left'>{pair}<br><small>{kind}</small></th>"]
        for tensor in tensors:
            worst = cells.get(tensor)
            if not worst:
                line.append("<td></td>")
                continue
            if any(r.verdict == "fail" for r in worst):
                state = "fail"
            elif any(_closeness(r) > 0.5 for r in worst):
                state = "near"
            else:
                state = "pass"
            text = "<br>".join(
                f"{r.metric} {r.value:.3g} {'&le;' if r.direction == 'max' else '&ge;'} {r.gate:g}" for r in worst)
            if state == "fail":
                anchor = f"fail-{len(failures)}"
                failing = [r for r in rows if f"{r.pair} ({r.profile})" == pair and r.tensor == tensor
                           and r.verdict == "fail"]
                failures.append((anchor, pair, tensor, failing))
                text = f"<a href='#{anchor}'>{text}</a>"
            line.append(f"<td style='background:{_COLOURS[state]};font-size:80%'>{text}</td>")
        body.append("".join(line) + "</tr>")
    html = ["<h2>Parity matrix</h2>", "<p>Worst value of each gated metric over every case, step and mode, "
            "against its gate from cases/tolerances.json. Red: over the gate; amber: more than half the gate "
            "used; green: within half. <b>Live</b> pairs compare two runs made in this session on this machine; "
            "<b>golden</b> pairs compare with the frozen golden.</p>"]
    if provenance:
        html.append("<p>" + "<br>".join(provenance) + "</p>")
    html.append(f"<table border=1 style='border-collapse:collapse'><tr><th>pair</th>{head}</tr>{''.join(body)}</table>")
    for anchor, pair, tensor, failing in failures:
        items = "".join(
            f"<li>{r.case}{'' if r.step is None else f' step {r.step}'}{'' if r.mode is None else f' {r.mode}'}: "
            f"{r.metric} = {r.value:.6g} (gate {r.gate:g}) — <code>{r.nodeid}</code></li>" for r in failing)
        html.append(f"<h4 id='{anchor}'>{pair} · {tensor}: {len(failing)} failing value(s)</h4><ul>{items}</ul>")
    return html


def summary_html(rows: list[Row], provenance: list[str] | None = None) -> list[str]:
    html = matrix_html(rows, provenance)
    tags = first_divergence(rows)
    failing = {k: v for k, v in tags.items() if v}
    html.append(f"<h2>Parity</h2><p>{len(rows)} measured values; {len(failing)} case/pair group(s) diverge"
                + "".join(f"<br>{k.replace('|', ' ')}: first divergence <b>{v}</b>" for k, v in failing.items())
                + "</p>")
    groups = sorted({(r.case, r.pair, r.profile) for r in rows if r.step is not None})
    for case, pair, profile in groups:
        png = step_curves_png(rows, case, pair, profile)
        if png:
            html.append(f'<img alt="{case} per-step error" src="data:image/png;base64,{png}"/>')
    return html


def _spectrogram(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    mono = audio.reshape(-1, audio.shape[-1]).mean(axis=0)
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    frames = 1 + (mono.size - n_fft) // hop
    window = np.hanning(n_fft)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(mono[idx] * window, axis=1)) ** 2
    return 10 * np.log10(spec.T + 1e-10)


def failure_png(tensor: str, ref: np.ndarray, cand: np.ndarray) -> str:
    """Audio: waveforms and both spectrograms. Tensors: per-frame max |ref - cand| along the time axis."""
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if tensor.startswith("audio") and ref.shape == cand.shape:
        fig, axes = _figure(16.0, 3.0, 4)
        item_ref, item_cand = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
        t = np.arange(ref.shape[-1]) / 48000.0
        axes[0][0].plot(t, item_ref[0], linewidth=0.4, label="reference")
        axes[0][0].plot(t, item_cand[0], linewidth=0.4, alpha=0.7, label="candidate")
        axes[0][0].set_title("waveform (first channel)")
        axes[0][0].legend(fontsize=7)
        axes[0][1].plot(t, np.abs(item_ref - item_cand).max(axis=0), linewidth=0.4, color="tab:red")
        axes[0][1].set_title("|reference - candidate| (max over channels)")
        axes[0][1].set_xlabel("seconds")
        for ax, data, title in ((axes[0][2], ref, "reference"), (axes[0][3], cand, "candidate")):
            ax.imshow(_spectrogram(data), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(f"spectrogram: {title}")
        return _png(fig)
    fig, axes = _figure()
    ax = axes[0][0]
    if ref.shape == cand.shape and ref.size:
        diff = np.abs(ref - cand)
        per_frame = diff.reshape(-1, diff.shape[-1]).max(axis=-1) if diff.ndim > 1 else diff
        ax.semilogy(np.maximum(per_frame, 1e-12), linewidth=0.8)
        ax.set_xlabel("row (flattened leading axes)")
        ax.set_ylabel("max |ref - cand|")
    ax.set_title(f"{tensor}: where the difference is")
    return _png(fig)


def failure_extras(tensor: str, ref: np.ndarray, cand: np.ndarray, rows: list[Row]) -> list:
    """pytest-html extras for a failed parity test: the numbers and a plot."""
    from pytest_html import extras

    table = "".join(
        f"<tr><td>{r.metric}</td><td>{r.value:.6g}</td><td>{'<=' if r.direction == 'max' else '>='} {r.gate:g}"
        f"</td><td>{r.verdict}</td></tr>" for r in rows
    )
    return [
        extras.html(f"<p><b>[{rows[0].stage}]</b> {rows[0].case} {tensor}</p><table border=1>"
                    f"<tr><th>metric</th><th>value</th><th>gate</th><th>verdict</th></tr>{table}</table>"),
        extras.png(failure_png(tensor, ref, cand), name=f"{tensor} difference"),
    ]
