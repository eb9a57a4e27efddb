"""The parametrization axes every parity test shares: pair (or backend) x profile x case [x step] [x tensor] [x mode].

One home for the axes and their ids (``pair-profile-case[-stepN][-tensor][-mode]``, readable under ``-k``), so
``tests/test_parity.py`` (through the plugin's ``pytest_generate_tests``) and test files with axes of their own
(``tests/test_lm.py``) select and name items the same way. Each axis is a list of (value, id) choices; the items
are their product.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from acestep_ort.host.case import Case, InvalidCase
from acestep_ort.host.schedule import resolve_schedule
from acestep_parity.backends import BACKEND_NAMES

GOLDEN = "golden"
# candidate~reference. Live pairs (plan §14.1's 3-way matrix, plus the DLL host) compare two runs made in this
# session on this machine; golden pairs compare with the frozen reference (possibly from another CPU).
LIVE_PAIRS = (("py_ort", "torch"), ("rust", "py_ort"), ("rust", "torch"), ("dll", "py_ort"), ("dll", "torch"))
GOLDEN_PAIRS = tuple((name, GOLDEN) for name in BACKEND_NAMES)
STAGE_TENSORS = (
    "text_token_ids", "text_attention_mask", "lyric_token_ids", "lyric_attention_mask", "text_hidden_states",
    "lyric_hidden_states", "encoder_hidden_states", "encoder_attention_mask", "context_latents", "schedule",
    "noise", "pred_latents",
)
# Tasks whose items expand per step / tensor / mode; a case of another task gets one (skipping) item per function.
EXPANDED_TASKS = ("text2music", "simple_mode")
DEFAULT_PROFILE = "fp32"

Choice = tuple[Any, str]  # (parameter value, its id part)
Axis = list[Choice]


@dataclass(frozen=True)
class Pair:
    """One comparison: ``candidate`` backend against ``reference`` (a backend run live, or the golden)."""

    candidate: str
    reference: str

    @property
    def name(self) -> str:
        return f"{self.candidate}~{self.reference}"

    @property
    def live(self) -> bool:
        return self.reference != GOLDEN


def selected_backends(config: pytest.Config) -> list[str]:
    """The backends ``--backend`` selects (default all)."""
    return config.getoption("--backend") or list(BACKEND_NAMES)


def selected_profiles(config: pytest.Config) -> list[str]:
    """The ONNX profiles ``--profile`` selects (default fp32)."""
    return config.getoption("--profile") or [DEFAULT_PROFILE]


def selected_pairs(config: pytest.Config) -> list[Pair]:
    """Every pair whose candidate is a selected backend (``--backend``; default all), golden pairs first."""
    chosen = selected_backends(config)
    return [Pair(c, r) for c, r in GOLDEN_PAIRS + LIVE_PAIRS if c in chosen]


def case_steps(case: Case) -> int:
    """Number of denoising steps of the case's schedule."""
    return len(resolve_schedule(case.shift, list(case.timesteps) if case.timesteps else None))


def pair_axis(pairs: Iterable[Pair]) -> Axis:
    return [(p, p.name) for p in pairs]


def named_axis(names: Iterable[str]) -> Axis:
    """An axis whose values are their own ids (backend names, profiles, tensors, modes)."""
    return [(n, n) for n in names]


def case_axis(cases: Iterable[Case | InvalidCase]) -> Axis:
    return [(c, c.id) for c in cases]


def step_axis(steps: Iterable[int], prefix: str = "step") -> Axis:
    return [(s, f"{prefix}{s}") for s in steps]


def param(choices: Sequence[Choice], group: str) -> Any:
    """One item: the choices' values, their ids joined by ``-``, and the pytest-xdist group it runs in (items of
    one case share a worker, where its backend runs are cached)."""
    return pytest.param(*(v for v, _ in choices), id="-".join(i for _, i in choices),
                        marks=pytest.mark.xdist_group(group))


def product(*axes: Axis) -> list[tuple[Choice, ...]]:
    return list(itertools.product(*axes))


def _marker_args(metafunc: pytest.Metafunc, name: str) -> tuple | None:
    marker = metafunc.definition.get_closest_marker(name)
    return marker.args if marker else None


def candidate_axes(metafunc: pytest.Metafunc) -> list[tuple[str, Axis]]:
    """The axes before the case: ``pair`` (or ``backend_name`` in tests without pairs), then ``profile``."""
    names, config = metafunc.fixturenames, metafunc.config
    axes: list[tuple[str, Axis]] = []
    if "pair" in names:
        axes.append(("pair", pair_axis(selected_pairs(config))))
    elif "backend_name" in names:
        axes.append(("backend_name", named_axis(selected_backends(config))))
    if "profile" in names:
        axes.append(("profile", named_axis(selected_profiles(config))))
    return axes


def per_case_argnames(metafunc: pytest.Metafunc) -> list[str]:
    return [n for n in ("step", "tensor", "mode") if n in metafunc.fixturenames]


def case_axes(metafunc: pytest.Metafunc, case: Case | InvalidCase) -> list[Axis]:
    """The axes after the case, for the ones the test asks for: every step, the ``tensors`` marker's tensors and
    the ``modes`` marker's modes; a case whose task does not expand gets step 0 and the first tensor and mode."""
    expand = case.task in EXPANDED_TASKS
    argnames = per_case_argnames(metafunc)
    axes: list[Axis] = []
    if "step" in argnames:
        axes.append(step_axis(range(case_steps(case)) if expand else [0]))
    for argname, marker in (("tensor", "tensors"), ("mode", "modes")):
        if argname in argnames:
            values = _marker_args(metafunc, marker)
            axes.append(named_axis((values if expand else values[:1]) if values is not None else [None]))
    return axes


def _wanted(argnames: Sequence[str], choices: Sequence[Choice]) -> bool:
    """Teacher forcing feeds the reference xt; only vt is compared, so there is no teacher xt item."""
    values = dict(zip(argnames, (v for v, _ in choices), strict=True))
    return not (values.get("mode") == "teacher" and values.get("tensor") == "xt")


def case_params(heads: Sequence[Axis], cases: Sequence[Case | InvalidCase],
                tails: Callable[[Case | InvalidCase], Sequence[Axis]], *, group: str | None = None,
                keep: Callable[[tuple[Choice, ...]], bool] = lambda tail: True) -> list[Any]:
    """The items ``heads`` x case x the case's own ``tails`` (those ``keep`` accepts), in that order; each runs
    in the xdist group of its case unless the test names one ``group`` for all its items."""
    return [param(head + (case_choice,) + tail, group or case_choice[0].id)
            for head in product(*heads)
            for case_choice in case_axis(cases)
            for tail in product(*tails(case_choice[0]))
            if keep(tail)]


def parity_parametrize(metafunc: pytest.Metafunc, cases: Sequence[Case | InvalidCase]) -> None:
    """Parametrize a test that asks for ``case``: candidate axes x case x its per-case axes, ids readable under
    ``-k``. A test function that names its own ``xdist_group`` (e.g. one expensive session fixture for all cases)
    keeps all its items together."""
    heads = candidate_axes(metafunc)
    tail_names = per_case_argnames(metafunc)
    own_group = _marker_args(metafunc, "xdist_group")
    params = case_params([axis for _, axis in heads], cases, lambda case: case_axes(metafunc, case),
                         group=own_group[0] if own_group else None, keep=lambda tail: _wanted(tail_names, tail))
    metafunc.parametrize([name for name, _ in heads] + ["case"] + tail_names, params)
