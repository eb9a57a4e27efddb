"""The one tolerance file (``cases/tolerances.json``): every parity gate lives there and nowhere else.

Layout (also read by ``cargo test``; plain JSON so any language can)::

    {
      "schema": 1,
      "defaults": {PAIR: {PROFILE: {TENSOR: {METRIC: gate}}}},   # PROFILE may be "*" (any profile)
      "overrides": [{"case": ID, "pair": PAIR, "profile": PROFILE, "tensor": TENSOR,
                     "metric": METRIC, "gate": number, "reason": "why, and the tracked root cause"}]
    }

A pair names the two sides compared, candidate first: ``torch~golden``, ``py_ort~golden``, ``rust~py_ort`` …
Metric directions come from :data:`acestep_parity.metrics.METRIC_DIRECTION` plus ``mismatches`` (count of
differing elements of an integer tensor, gate = maximum allowed). An override without a ``reason`` is rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from acestep_parity.metrics import METRIC_DIRECTION

EXTRA_METRICS = {"mismatches": "max"}


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
            metric_direction(ov["metric"])
        return cls(path=path, defaults=defaults, overrides=tuple(overrides))

    def gates(self, pair: str, profile: str, tensor: str, case_id: str | None = None) -> dict[str, Gate]:
        """Gates for one comparison; per-case overrides replace the defaults metric by metric."""
        profiles = self.defaults.get(pair)
        if profiles is None:
            raise ToleranceError(f"{self.path}: no gates for pair {pair!r}")
        metrics = dict(profiles.get("*", {}).get(tensor, {}))
        metrics.update(profiles.get(profile, {}).get(tensor, {}))
        if not metrics:
            raise ToleranceError(f"{self.path}: no gates for {pair} / {profile} / {tensor}")
        out = {m: Gate(m, float(v), metric_direction(m), "default") for m, v in metrics.items()}
        for ov in self.overrides:
            if (ov["case"] == case_id and ov["pair"] == pair and ov["profile"] in (profile, "*")
                    and ov["tensor"] == tensor):
                m = ov["metric"]
                out[m] = Gate(m, float(ov["gate"]), metric_direction(m), "override", ov["reason"])
        return out

    def has(self, pair: str, profile: str, tensor: str) -> bool:
        profiles = self.defaults.get(pair, {})
        return tensor in profiles.get(profile, {}) or tensor in profiles.get("*", {})
