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
from html import escape
from pathlib import Path

import numpy as np

from acestep_parity.parity import STAGES, TENSOR_STAGE, Row

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


STEP_AXES = {"DiT": "DiT denoising step", "LM": "LM token step"}


def step_series(rows: list[Row], case: str, pair: str, profile: str) -> dict[str, dict[str, dict[int, float]]]:
    """Per-step max_abs of one case, pair and profile, on two axes that never share a step number: ``"DiT"``
    (denoising steps of vt / xt, per mode) and ``"LM"`` (5 Hz LM token steps: top-k logits)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        if (r.case, r.pair, r.profile) != (case, pair, profile) or r.step is None or r.metric != "max_abs":
            continue
        axis = "LM" if r.stage == "LM" else "DiT"
        label = r.tensor + (f" {r.mode}" if r.mode else "")
        out.setdefault(axis, {}).setdefault(label, {})[r.step] = max(r.value, 1e-12)
    return {axis: out[axis] for axis in STEP_AXES if axis in out}


def step_curves_png(rows: list[Row], case: str, pair: str, profile: str) -> str | None:
    """Per-step max_abs of vt/xt (teacher-forced and free-running) and of the LM's top-k logits for one case,
    log scale, with gates (dashed) and failing steps (red x); DiT and LM steps on separate axes."""
    series = step_series(rows, case, pair, profile)
    if not series:
        return None
    mine = [r for r in rows if (r.case, r.pair, r.profile) == (case, pair, profile) and r.step is not None
            and r.metric == "max_abs"]
    fig, axes = _figure(6.0 * len(series), 2.6, len(series))
    for ax, (axis, curves) in zip(axes[0], series.items(), strict=True):
        for label, points in sorted(curves.items()):
            steps = sorted(points)
            ax.semilogy(steps, [points[s] for s in steps], marker="o", markersize=3, label=label)
        on_axis = [r for r in mine if (r.stage == "LM") == (axis == "LM")]
        for gate in sorted({r.gate for r in on_axis if r.gate > 0}):
            ax.axhline(gate, linestyle="--", linewidth=0.8, color="gray")
        bad = [r for r in on_axis if r.verdict == "fail"]
        if bad:
            ax.plot([r.step for r in bad], [max(r.value, 1e-12) for r in bad], "x", color="red", label="over gate")
        ax.set_xlabel(STEP_AXES[axis])
        ax.set_ylabel("max_abs")
        ax.set_title(f"{case} {pair} {profile}: {axis} per-step error", fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)


MATRIX_TENSORS = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "noise", "schedule",
    "vt", "xt", "pred_latents", "audio", "audio_decoded",
    "lm_tokens", "lm_mask_digests", "lm_topk_logits", "lm_logits", "lm_metadata",
)
# column headers of the matrix (the full name is in the header's title)
SHORT_TENSOR = {
    "text_token_ids": "txt ids", "text_attention_mask": "txt mask", "lyric_token_ids": "lyr ids",
    "lyric_attention_mask": "lyr mask", "text_hidden_states": "txt hid", "lyric_hidden_states": "lyr hid",
    "encoder_hidden_states": "enc hid", "encoder_attention_mask": "enc mask", "context_latents": "context",
    "noise": "noise", "schedule": "sched", "vt": "vt", "xt": "xt", "pred_latents": "pred lat", "audio": "audio",
    "audio_decoded": "decoded", "lm_tokens": "tokens", "lm_mask_digests": "masks", "lm_topk_logits": "top-k",
    "lm_logits": "logits", "lm_metadata": "meta",
}
# cell states, furthest from passing last: background, text colour
_COLOURS = {"low": ("#e3f4e0", "#234"), "pass": ("#b9e4b3", "#123"), "near": ("#f7d98b", "#420"),
            "fail": ("#c0392b", "#fff")}
_LEGEND = {"low": "under 10 % of the gate used", "pass": "under half", "near": "over half",
           "fail": "over the gate"}
CELL_CHARS = 8  # the longest text a matrix cell holds


def _badness(row: Row) -> float:
    if row.value != row.value:  # NaN: as far from passing as it gets
        return float("inf")
    return row.value if row.direction == "max" else -row.value


def _worst(group: list[Row]) -> Row:
    """The row furthest from passing: the largest value of a ``max`` metric, the smallest of a ``min`` one."""
    return max(group, key=_badness)


def _closeness(row: Row) -> float:
    """How much of the gate a passing value uses (1 = on the gate). dB metrics: 6 dB of margin counts as half."""
    if row.value != row.value:
        return float("inf")
    if row.metric.endswith("_db"):
        return 10 ** (-(row.value - row.gate) / 20) if row.direction == "min" else 10 ** ((row.value - row.gate) / 20)
    if row.direction == "max":
        return 0.0 if row.gate == 0 and row.value == 0 else (row.value / row.gate if row.gate else float("inf"))
    return (1 - row.value) / (1 - row.gate) if row.gate < 1 and row.value <= 1 else 0.0


def _sci(value: float) -> str:
    """``3.4e-6``: two significant digits, the exponent without its sign padding."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def short_value(row: Row) -> str:
    """A cell's number in at most ``CELL_CHARS`` characters: ``3.4e-6``, ``0.012``, ``16``, ``110 dB``,
    ``1-2.1e-7`` (a correlation just under 1)."""
    v = row.value
    if v != v:
        return "nan"
    if row.metric.endswith("_db"):
        return ("inf" if v > 0 else "-inf") + " dB" if abs(v) == float("inf") else f"{v:.0f} dB"
    if abs(v) == float("inf"):
        return "inf" if v > 0 else "-inf"
    if row.direction == "min" and row.gate < 1 and 0 <= v <= 1:  # a correlation: the distance from 1 matters
        return "1" if v == 1 else ("1-" + _sci(1 - v) if 1 - v < 0.01 else f"{v:.4f}"[:CELL_CHARS])
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    if 0.01 <= abs(v) < 1000:
        return f"{v:.3g}"
    return _sci(v)


def _state(worst: list[Row]) -> str:
    if any(r.verdict == "fail" for r in worst):
        return "fail"
    closest = max(_closeness(r) for r in worst)
    return "near" if closest > 0.5 else "pass" if closest > 0.1 else "low"


def _where(row: Row) -> str:
    return row.case + ("" if row.step is None else f" step {row.step}") + ("" if row.mode is None else f" {row.mode}")


def matrix(rows: list[Row]) -> dict[str, dict[str, list[Row]]]:
    """``{pair: {tensor: [worst row per metric]}}`` over every case, step and mode."""
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(f"{r.pair} ({r.profile})", r.tensor, r.metric)].append(r)
    out: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for (pair, tensor, _metric), group in sorted(groups.items()):
        out[pair][tensor].append(_worst(group))
    return out


def matrix_columns(rows: list[Row]) -> list[str]:
    """Every tensor measured, in pipeline order (known captures first, then the rest by name)."""
    present = {r.tensor for r in rows}
    return [t for t in MATRIX_TENSORS if t in present] + sorted(present - set(MATRIX_TENSORS))


def _finite(x: float) -> float:
    return x if x == x and x != float("inf") else 0.0


def column_metrics(table: dict[str, dict[str, list[Row]]]) -> dict[str, str]:
    """``{tensor: metric}``: the metric a column's passing cells show, the one that comes closest to its gate
    anywhere in the column (ties: the first by name)."""
    best: dict[str, dict[str, float]] = defaultdict(dict)
    for cells in table.values():
        for tensor, worst in cells.items():
            for r in worst:
                best[tensor][r.metric] = max(best[tensor].get(r.metric, 0.0), _finite(_closeness(r)))
    return {t: max(sorted(m), key=lambda k: m[k]) for t, m in best.items()}


def matrix_cells(rows: list[Row]) -> dict[str, dict[str, dict]]:
    """``{pair: {tensor: cell}}``; a cell holds ``text`` (the headline metric's worst value, at most
    ``CELL_CHARS`` characters), ``state`` (low / pass / near / fail), ``title`` (every metric's worst value
    against its gate, where it was measured, the counts) and ``failing`` (its rows over the gate)."""
    all_rows: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        all_rows[(f"{r.pair} ({r.profile})", r.tensor)].append(r)
    table = matrix(rows)
    shown = column_metrics(table)
    out: dict[str, dict[str, dict]] = {}
    for pair, cells in table.items():
        for tensor, worst in cells.items():
            group = all_rows[(pair, tensor)]
            failing = [r for r in group if r.verdict == "fail"]
            # the headline: a failing metric first, else the column's metric, so a column reads one metric
            head = max(worst, key=lambda r: (r.verdict == "fail", r.metric == shown[tensor], _closeness(r)))
            lines = [f"{tensor} · {pair}"]
            for r in sorted(worst, key=lambda r: r is not head):
                share = _closeness(r)
                used = f"{share:.0%} of the gate" if share == share and share != float("inf") else "over the gate"
                value = (f"1-{1 - r.value:.2g}" if r.metric == "pearson" and 0 <= 1 - r.value < 0.01
                         else f"{r.value:.4g}")
                lines.append(f"{r.metric} {value} {'≤' if r.direction == 'max' else '≥'} {r.gate:g} "
                             f"({'FAIL, ' if r.verdict == 'fail' else ''}{used}), worst at {_where(r)}")
            lines.append(count_phrase(group))
            out.setdefault(pair, {})[tensor] = {"text": short_value(head), "state": _state(worst),
                                                "title": "\n".join(lines), "failing": failing, "metric": head.metric}
    return out


_MATRIX_CSS = """<style>
.parity-matrix{border-collapse:collapse;font-size:11px;color:#111;margin:4px 0}
.parity-matrix th,.parity-matrix td{border:1px solid #bbb;padding:2px 4px;white-space:nowrap}
.parity-matrix td{text-align:right;font-variant-numeric:tabular-nums;min-width:3.6em}
.parity-matrix th{background:#f2f2f2;font-weight:600}
.parity-matrix th.pair{text-align:left}
.parity-matrix th.kind{text-align:left;background:#ddd;font-weight:normal;font-style:italic}
.parity-matrix td.fail{font-weight:bold;outline:2px solid #7b1d12;outline-offset:-2px}
.parity-matrix td a{color:inherit}
.parity-legend span{display:inline-block;padding:0 6px;margin-right:4px;border:1px solid #bbb;color:#111}
.parity-failures{color:#111}
</style>"""


def matrix_html(rows: list[Row], provenance: list[str] | None = None) -> list[str]:
    """The pair x tensor matrix the HTML report opens with, compact enough for a laptop screen: each cell the
    worst value of its headline metric (a failing one first, else the one using most of its gate) as a short
    number, coloured by how much of the gate it uses, every metric with its gate and where it was worst in the
    cell's tooltip, failing cells (red, bold, outlined) linked to the list of their failing rows below. A
    ``~golden`` row compares with the frozen golden (possibly another CPU); the other rows are live pairs run in
    this session on this machine."""
    cells = matrix_cells(rows)
    if not cells:
        return []
    tensors = matrix_columns(rows)
    shown = column_metrics(matrix(rows))
    stages: list[tuple[str, int]] = []
    for t in tensors:
        stage = TENSOR_STAGE.get(t, "other")
        if stages and stages[-1][0] == stage:
            stages[-1] = (stage, stages[-1][1] + 1)
        else:
            stages.append((stage, 1))
    head = ("<tr><th rowspan=2 class=pair>pair</th>" + "".join(f"<th colspan={n}>{s}</th>" for s, n in stages)
            + "</tr><tr>" + "".join(f"<th title='{escape(t)}: cells show {shown.get(t, '')}'>"
                                    f"{escape(SHORT_TENSOR.get(t, t[:CELL_CHARS]))}</th>" for t in tensors)
            + "</tr>")
    body, failures = [], []
    kinds = (("live", "live: two runs made in this session on this machine"),
             ("golden", "golden: against the frozen golden (possibly made on another CPU)"))
    for kind, label in kinds:
        pairs = [p for p in cells if ("~golden" in p) == (kind == "golden")]
        if pairs:
            body.append(f"<tr><th class=kind colspan={len(tensors) + 1}>{label}</th></tr>")
        for pair in pairs:
            line = [f"<tr><th class=pair>{escape(pair)}</th>"]
            for tensor in tensors:
                cell = cells[pair].get(tensor)
                if not cell:
                    line.append("<td title='not measured'></td>")
                    continue
                background, colour = _COLOURS[cell["state"]]
                text = escape(cell["text"])
                if cell["failing"]:
                    anchor = f"fail-{len(failures)}"
                    failures.append((anchor, pair, tensor, cell["failing"]))
                    text = f"<a href='#{anchor}'>{text}</a>"
                line.append(f"<td class='{cell['state']}' data-metric='{cell['metric']}' "
                            f"style='background:{background};color:{colour}' title='{escape(cell['title'])}'>"
                            f"{text}</td>")
            body.append("".join(line) + "</tr>")
    legend = "".join(f"<span style='background:{_COLOURS[s][0]};color:{_COLOURS[s][1]}'>{text}</span>"
                     for s, text in _LEGEND.items())
    html = [_MATRIX_CSS, "<h2>Parity matrix</h2>",
            f"<p class=parity-legend>{count_phrase(rows)}. Each cell: the worst value over every case, step and "
            f"mode of its column's metric (the one closest to its gate; a failing metric where one fails), coloured "
            f"by the most of a gate (cases/tolerances.json) any of its metrics uses; hover a header for the metric, "
            f"a cell for every metric, its gate and where it was worst; click a failing cell for its rows. {legend}</p>",
            f"<table class=parity-matrix>{head}{''.join(body)}</table>"]
    if provenance:
        html.append("<p>" + "<br>".join(escape(line) for line in provenance) + "</p>")
    for anchor, pair, tensor, failing in failures:
        items = "".join(
            f"<li>{escape(_where(r))}: {r.metric} = {r.value:.6g} (gate {r.gate:g}) — <code>{escape(r.nodeid)}</code>"
            "</li>" for r in failing)
        html.append(f"<div class=parity-failures><h4 id='{anchor}'>{escape(pair)} · {tensor}: {len(failing)} "
                    f"failing value(s) in {len(_tests(failing))} test(s)</h4><ul>{items}</ul></div>")
    return html


def summary_html(rows: list[Row], provenance: list[str] | None = None) -> list[str]:
    html = matrix_html(rows, provenance)
    tags = first_divergence(rows)
    failing = {k: v for k, v in tags.items() if v}
    html.append(f"<h2>Parity</h2><p>{count_phrase(rows)}; {len(failing)} case/pair group(s) diverge"
                + "".join(f"<br>{k.replace('|', ' ')}: first divergence <b>{v}</b>" for k, v in failing.items())
                + "</p>")
    groups = sorted({(r.case, r.pair, r.profile) for r in rows if r.step is not None})
    plots, exact = [], []
    for case, pair, profile in groups:
        if all(r.value == 0 for r in rows if (r.case, r.pair, r.profile) == (case, pair, profile)
               and r.step is not None):
            exact.append(f"{case} {pair} {profile}")  # a flat line at zero says nothing a sentence cannot
            continue
        png = step_curves_png(rows, case, pair, profile)
        if png:
            plots.append(f'<img alt="{case} {pair} per-step error" src="data:image/png;base64,{png}"/>')
    if plots or exact:
        html.append("<h2>Per-step error</h2><p>DiT denoising steps and LM token steps on separate axes; dashed: "
                    "the gates; red x: a step over its gate."
                    + (f" Exact (0) at every step: {escape(', '.join(exact))}." if exact else "") + "</p>")
        html.extend(plots)
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


def worst_element(ref: np.ndarray, cand: np.ndarray) -> str | None:
    """``"worst element [0, 7, 5] of (1, 128, 64): reference 0.4522, candidate 0.4532 (|diff| 0.001)"``: where
    the largest difference is (a NaN counts as the largest); None when the shapes differ or nothing differs."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape != cand.shape or not ref.size:
        return None
    diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    flat = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    if not diff.flat[flat] and not np.isnan(diff.flat[flat]):
        return None
    index = [int(i) for i in np.unravel_index(flat, ref.shape)]
    return (f"worst element {index} of {tuple(ref.shape)}: reference {ref.flat[flat]:.7g}, candidate "
            f"{cand.flat[flat]:.7g} (|diff| {diff.flat[flat]:.3g})")


def failure_text(message: str, rows: list[Row] | None = None, ref: np.ndarray | None = None,
                 cand: np.ndarray | None = None, location: str = "") -> str:
    """A failed parity check in a few lines, for the terminal and the report, instead of a traceback full of
    fixture reprs: the check's message (stage, case, tensor, step, pair, profile, each failing metric against its
    gate), then the mode, the worst element, the metrics within their gate and the test line."""
    lines = [message]
    rows = rows or []
    detail = [f"mode {rows[0].mode}"] if rows and rows[0].mode else []
    element = worst_element(ref, cand) if ref is not None and cand is not None else None
    detail += [element] if element else []
    if detail:
        lines.append("  " + "; ".join(detail))
    passed = [r for r in rows if r.verdict != "fail"]
    if passed:
        lines.append("  within the gate: " + ", ".join(f"{r.metric}={r.value:.4g}" for r in passed))
    if location:
        lines.append(f"  at {location} (--tb=long for the traceback)")
    return "\n".join(lines)
