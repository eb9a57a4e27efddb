"""One comparison = metrics against gates, recorded as rows; shared by every parity test.

A row is one measured metric of one tensor of one case (and step) for one comparison pair and profile, with
its gate, verdict and the pipeline stage it belongs to (the failure tag of DESIGN §7).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from acestep_parity import metrics
from acestep_parity.tolerances import Gate

SAMPLE_RATE = 48000
# Pipeline order; the first stage with a failing row is the case's failure tag.
STAGES = ("TOKENIZER", "TEXT_ENC", "COND", "NOISE", "SCHED", "DiT", "VAE", "LM", "FFI")
TENSOR_STAGE = {
    "text_token_ids": "TOKENIZER", "lyric_token_ids": "TOKENIZER", "text_attention_mask": "TOKENIZER",
    "lyric_attention_mask": "TOKENIZER", "text_hidden_states": "TEXT_ENC", "lyric_hidden_states": "TEXT_ENC",
    "encoder_hidden_states": "COND", "encoder_attention_mask": "COND", "context_latents": "COND",
    "noise": "NOISE", "schedule": "SCHED", "vt": "DiT", "xt": "DiT", "pred_latents": "DiT", "audio": "VAE",
    "audio_decoded": "VAE",
    "lm_tokens": "LM", "lm_logits": "LM", "lm_topk_logits": "LM", "lm_mask_digests": "LM", "lm_metadata": "LM",
    "logits": "LM", "present_keys": "LM", "present_values": "LM",
}
AUDIO_TENSORS = ("audio", "audio_decoded")


@dataclass
class Row:
    case: str
    tensor: str
    pair: str
    profile: str
    metric: str
    value: float
    gate: float
    direction: str
    verdict: str
    stage: str
    step: int | None = None
    mode: str | None = None
    gate_source: str = "default"
    nodeid: str = ""


class ParityFailure(AssertionError):
    """A gate that did not hold; the message lists every failing metric with value and gate."""


def _is_discrete(array: np.ndarray) -> bool:
    return array.dtype.kind in "biu"


def measure(ref: np.ndarray, cand: np.ndarray, gates: dict[str, Gate], tensor: str) -> dict[str, float]:
    """Metric values for the gated metrics; shapes (and, for audio, length) are asserted equal first."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape != cand.shape:
        what = "sample count" if tensor in AUDIO_TENSORS else "shape"
        raise ParityFailure(f"{tensor}: {what} differs: reference {ref.shape} vs candidate {cand.shape}")
    values: dict[str, float] = {}
    continuous = [m for m in gates if m != "mismatches"]
    if "mismatches" in gates:
        values["mismatches"] = float(np.count_nonzero(ref != cand))
    if continuous:
        if _is_discrete(ref) and _is_discrete(cand) and "max_abs" in continuous and len(continuous) == 1:
            values["max_abs"] = float(np.max(np.abs(ref.astype(np.int64) - cand.astype(np.int64)))) if ref.size else 0.0
        else:
            sr = SAMPLE_RATE if tensor in AUDIO_TENSORS else None
            values.update(metrics.compute_all(ref.astype(np.float64), cand.astype(np.float64), continuous,
                                              sample_rate=sr))
    return values


def evaluate(
    ref: np.ndarray, cand: np.ndarray, gates: dict[str, Gate], *, case: str, tensor: str, pair: str, profile: str,
    step: int | None = None, mode: str | None = None,
) -> list[Row]:
    values = measure(ref, cand, gates, tensor)
    rows = []
    for name, gate in gates.items():
        value = values[name]
        rows.append(Row(case=case, tensor=tensor, pair=pair, profile=profile, metric=name, value=value,
                        gate=gate.value, direction=gate.direction, verdict="pass" if gate.passes(value) else "fail",
                        stage=TENSOR_STAGE.get(tensor, "DiT"), step=step, mode=mode, gate_source=gate.source))
    return rows


def failure_message(rows: list[Row], gates: dict[str, Gate]) -> str:
    bad = [r for r in rows if r.verdict == "fail"]
    where = f"{bad[0].case} {bad[0].tensor}" + (f" step {bad[0].step}" if bad[0].step is not None else "")
    parts = [f"{r.metric}={r.value:.6g} fails {gates[r.metric].describe()}" for r in bad]
    return f"[{bad[0].stage}] {where} ({bad[0].pair}, {bad[0].profile}): " + "; ".join(parts)


def rows_to_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows])


def rows_from_json(text: str) -> list[Row]:
    return [Row(**d) for d in json.loads(text)]
