"""Turbo timestep schedules, the nearest-shift rule, custom-timestep snapping and the Euler ODE update.

Reproduces ``AceStepConditionGenerationModel.generate_audio`` (turbo, ``infer_method="ode"``, euler) at upstream
commit 82252c2: three hard-coded 8-entry tables, ``shift = min([1,2,3], key=|x-shift|)`` (ties to the smaller),
custom ``timesteps`` snapped to the nearest of 20 valid values (first on ties), ``xt - vt*dt`` and the final
``x0 = xt - vt*t``. On CPU the schedule tensor is float32, so every value is the float32 rounding of the table
entry, and ``dt`` is the difference of two such values in double, rounded to float32 when multiplied.
"""

from __future__ import annotations

import numpy as np

VALID_SHIFTS = (1.0, 2.0, 3.0)
SHIFT_TIMESTEPS: dict[float, tuple[float, ...]] = {
    1.0: (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
    2.0: (1.0, 0.9333333333333333, 0.8571428571428571, 0.7692307692307693, 0.6666666666666666,
          0.5454545454545454, 0.4, 0.2222222222222222),
    3.0: (1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3),
}
VALID_TIMESTEPS: tuple[float, ...] = (
    1.0, 0.9545454545454546, 0.9333333333333333, 0.9, 0.875, 0.8571428571428571, 0.8333333333333334,
    0.7692307692307693, 0.75, 0.6666666666666666, 0.6428571428571429, 0.625, 0.5454545454545454, 0.5, 0.4,
    0.375, 0.3, 0.25, 0.2222222222222222, 0.125,
)
MAX_CUSTOM_TIMESTEPS = 20


def shift_formula(shift: float, steps: int = 8) -> list[float]:
    """Closed form behind the tables: ``t_i = s*u/(1+(s-1)*u)``, ``u = 1 - i/steps`` (terminal 0 implicit)."""
    out = []
    for i in range(steps):
        u = 1.0 - i / steps
        out.append(shift * u / (1.0 + (shift - 1.0) * u))
    return out


def nearest_shift(shift: float) -> float:
    """Upstream's ``min(VALID_SHIFTS, key=|x - shift|)``: Python's min keeps the first minimum, so 1.5 -> 1.0."""
    return min(VALID_SHIFTS, key=lambda x: abs(x - shift))


def snap_custom_timesteps(timesteps: list[float]) -> list[float] | None:
    """Map user timesteps the way the handler and ``generate_audio`` do; ``None`` means 'use the shift table'.

    The handler first turns the list into a float32 tensor, so values are float32-rounded before snapping.
    Trailing exact zeros are dropped, more than 20 entries are truncated, each value goes to the nearest valid
    timestep (first on ties).
    """
    values = [float(v) for v in np.asarray(timesteps, dtype=np.float32).tolist()]
    while values and values[-1] == 0:
        values.pop()
    if not values:
        return None
    values = values[:MAX_CUSTOM_TIMESTEPS]
    return [min(VALID_TIMESTEPS, key=lambda x: abs(x - t)) for t in values]


def resolve_schedule(shift: float = 1.0, timesteps: list[float] | None = None) -> list[float]:
    """The schedule as upstream resolves it (custom timesteps win when they survive snapping)."""
    if timesteps is not None:
        snapped = snap_custom_timesteps(timesteps)
        if snapped is not None:
            return snapped
    return list(SHIFT_TIMESTEPS[nearest_shift(shift)])


def schedule_f32(schedule: list[float]) -> np.ndarray:
    """The schedule tensor on CPU: float32 (``torch.tensor(list, dtype=float32)``)."""
    return np.asarray(schedule, dtype=np.float32)


def step_dts(schedule: list[float]) -> list[float]:
    """``dt_i = t_i - t_{i+1}`` as upstream computes it: two ``.item()`` floats of float32 values, in double."""
    t32 = schedule_f32(schedule)
    return [float(t32[i]) - float(t32[i + 1]) for i in range(len(t32) - 1)]


def euler_step(xt: np.ndarray, vt: np.ndarray, dt: float) -> np.ndarray:
    """``xt - vt * (dt * ones(dtype))``: dt becomes a float32 tensor before the multiply."""
    return (xt - vt * np.float32(dt)).astype(np.float32, copy=False)


def x0_step(xt: np.ndarray, vt: np.ndarray, t: float) -> np.ndarray:
    """Final step ``get_x0_from_noise``: ``xt - vt * t`` with t the float32 schedule value."""
    return (xt - vt * np.float32(t)).astype(np.float32, copy=False)


def ode_update(xt: np.ndarray, vt: np.ndarray, schedule: list[float], step: int) -> np.ndarray:
    """One turbo ODE update after step ``step``: Euler for all but the last step, x0 reconstruction last."""
    t32 = schedule_f32(schedule)
    if step == len(t32) - 1:
        return x0_step(xt, vt, float(t32[step]))
    return euler_step(xt, vt, float(t32[step]) - float(t32[step + 1]))
