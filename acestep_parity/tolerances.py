"""The one tolerance file (``cases/tolerances.json``): every parity gate lives there and nowhere else.

Layout (also read by ``cargo test``; plain JSON so any language can)::

    {
      "schema": 1,
      "defaults": {PAIR: {PROFILE: {TENSOR: {METRIC: gate}}}},   # PROFILE may be "*" (any profile)
      "overrides": [{"case": ID, "pair": PAIR, "profile": PROFILE, "tensor": TENSOR,
                     "metric": METRIC, "gate": number, "reason": "why, and the tracked root cause",
                     "scope": SCOPE}],                                  # optional; case "*" = every case
      "lossy_profiles": {"pairs": [PAIR, ...],                         # pairs whose reference stays fp32
                         PROFILE: {"reason": "...", "gates": {TENSOR: {METRIC: gate}}}}
    }

A lighter ONNX profile (fp16, int8_*) is compared with the fp32 reference (torch, the golden) on the lossy gates
of ``lossy_profiles`` for the pairs listed there; every other comparison of that profile (a tensor the profile
leaves fp32, a pair of two runs of the same profile such as ``rust~py_ort``) keeps the pair's fp32 gates, which
are never looser.

A pair names the two sides compared, candidate first: ``torch~golden``, ``py_ort~golden``, ``rust~py_ort`` …
Metric directions come from :data:`acestep_parity.metrics.METRIC_DIRECTION` plus ``mismatches`` (count of
differing elements of an integer tensor, gate = maximum allowed). An override without a ``reason`` is rejected.

An override with a ``scope`` applies only when the caller names that scope. One exists, :data:`FULL_DEPTH`: the
run's checkpoint has upstream's full depth (a 28-layer text encoder; see :func:`checkpoint_scopes`), where the
28-layer encoders' error is larger than at the depth the defaults were measured at (docs/realsize.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from acestep_parity.metrics import METRIC_DIRECTION

EXTRA_METRICS = {"mismatches": "max"}
FULL_DEPTH = "full_depth"
SCOPES = (FULL_DEPTH,)
FULL_DEPTH_TEXT_LAYERS = 28  # Qwen3-Embedding-0.6B, upstream's text encoder


def checkpoint_scopes(text_config: dict) -> tuple[str, ...]:
    """The override scopes a checkpoint's run uses: ``full_depth`` for a text encoder of upstream's depth."""
    return (FULL_DEPTH,) if int(text_config.get("num_hidden_layers", 0)) >= FULL_DEPTH_TEXT_LAYERS else ()


def metric_direction(metric: str) -> str:
    if metric in EXTRA_METRICS:
        return EXTRA_METRICS[metric]
    if metric in METRIC_DIRECTION:
        return METRIC_DIRECTION[metric]
    raise ToleranceError(f"unknown metric {metric!r}")


class ToleranceError(ValueError):
    """A malformed tolerance file or a lookup with no gate."""


@dataclass(frozen=True)
class Gate:
    metric: str
    value: float
    direction: str  # "max": measured <= value; "min": measured >= value
    source: str  # "default" or "override"
    reason: str = ""

    def passes(self, measured: float) -> bool:
        if measured != measured:  # NaN never passes
            return False
        return measured <= self.value if self.direction == "max" else measured >= self.value

    def describe(self) -> str:
        op = "<=" if self.direction == "max" else ">="
        return f"{self.metric} {op} {self.value:g} ({self.source}{': ' + self.reason if self.reason else ''})"


@dataclass(frozen=True)
class Tolerances:
    path: Path
    defaults: dict
    overrides: tuple[dict, ...]
    lossy: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Tolerances:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ToleranceError(f"tolerance file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ToleranceError(f"{path}: invalid JSON: {exc}") from None
        if data.get("schema") != 1:
            raise ToleranceError(f"{path}: 'schema' must be 1")
        defaults = data.get("defaults")
        if not isinstance(defaults, dict):
            raise ToleranceError(f"{path}: 'defaults' must be an object")
        for pair, profiles in defaults.items():
            for profile, tensors in profiles.items():
                for tensor, metrics in tensors.items():
                    for metric, gate in metrics.items():
                        where = f"{path}: defaults.{pair}.{profile}.{tensor}.{metric}"
                        try:
                            metric_direction(metric)
                        except ToleranceError as exc:
                            raise ToleranceError(f"{where}: {exc}") from None
                        if isinstance(gate, bool) or not isinstance(gate, (int, float)):
                            raise ToleranceError(f"{where}: gate must be a number")
        overrides = data.get("overrides", [])
        for i, ov in enumerate(overrides):
            where = f"{path}: overrides[{i}]"
            missing = [k for k in ("case", "pair", "profile", "tensor", "metric", "gate") if k not in ov]
            if missing:
                raise ToleranceError(f"{where}: missing {missing}")
            if not str(ov.get("reason", "")).strip():
                raise ToleranceError(f"{where} (case {ov['case']}): an override must carry a non-empty 'reason'")
            if "scope" in ov and ov["scope"] not in SCOPES:
                raise ToleranceError(f"{where}: unknown scope {ov['scope']!r}; choose from {list(SCOPES)}")
            metric_direction(ov["metric"])
        lossy = data.get("lossy_profiles", {})
        for profile, entry in lossy.items():
            if profile == "comment":
                continue
            if profile == "pairs":
                if not isinstance(entry, list) or not all(p in defaults for p in entry):
                    raise ToleranceError(f"{path}: lossy_profiles.pairs must list pairs of 'defaults'")
                continue
            if not str(entry.get("reason", "")).strip():
                raise ToleranceError(f"{path}: lossy_profiles.{profile} must carry a non-empty 'reason'")
            for metrics in entry.get("gates", {}).values():
                for metric in metrics:
                    metric_direction(metric)
        return cls(path=path, defaults=defaults, overrides=tuple(overrides), lossy=lossy)

    def gates(self, pair: str, profile: str, tensor: str, case_id: str | None = None,
              scopes: tuple[str, ...] = ()) -> dict[str, Gate]:
        """Gates for one comparison; per-case overrides (and those of the ``scopes`` named) replace the defaults
        metric by metric, case-specific after case-wide."""
        profiles = self.defaults.get(pair)
        if profiles is None:
            raise ToleranceError(f"{self.path}: no gates for pair {pair!r}")
        metrics = dict(profiles.get("*", {}).get(tensor, {}))
        lossy = self.lossy.get(profile, {}).get("gates", {}).get(tensor) if pair in self.lossy.get("pairs", ()) else None
        if profile in profiles and tensor in profiles[profile]:
            metrics.update(profiles[profile][tensor])
        elif lossy is not None:
            metrics.update(lossy)
        elif profile != "fp32":
            metrics.update(profiles.get("fp32", {}).get(tensor, {}))
        if not metrics:
            raise ToleranceError(f"{self.path}: no gates for {pair} / {profile} / {tensor}")
        out = {m: Gate(m, float(v), metric_direction(m), "default") for m, v in metrics.items()}
        matching = [ov for ov in self.overrides
                    if ov["case"] in (case_id, "*") and ov["pair"] == pair and ov["profile"] in (profile, "*")
                    and ov["tensor"] == tensor and ov.get("scope", None) in (None, *scopes)]
        for ov in sorted(matching, key=lambda o: o["case"] != "*"):
            m = ov["metric"]
            out[m] = Gate(m, float(ov["gate"]), metric_direction(m), "override", ov["reason"])
        return out

    def has(self, pair: str, profile: str, tensor: str) -> bool:
        profiles = self.defaults.get(pair, {})
        lossy = pair in self.lossy.get("pairs", ()) and tensor in self.lossy.get(profile, {}).get("gates", {})
        return (tensor in profiles.get(profile, {}) or tensor in profiles.get("*", {}) or lossy
                or (profile != "fp32" and tensor in profiles.get("fp32", {})))
