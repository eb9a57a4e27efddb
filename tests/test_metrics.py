"""Known-answer unit tests of acestep_parity.metrics (expected numbers are worked out by hand in comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from acestep_parity.metrics import (
    AUDIO_METRICS,
    METRIC_DIRECTION,
    METRIC_NAMES,
    MetricInputError,
    compute_all,
    cosine,
    log_spectral_distance,
    max_abs,
    mean_abs,
    multi_resolution_stft_distance,
    passes,
    pearson,
    rmse,
    si_sdr_db,
    snr_db,
)

SR = 48000

# Every metric as a two-argument callable, for the guard tests.
ALL_METRICS = {
    "max_abs": max_abs,
    "mean_abs": mean_abs,
    "rmse": rmse,
    "cosine": cosine,
    "pearson": pearson,
    "snr_db": snr_db,
    "si_sdr_db": si_sdr_db,
    "lsd_db": log_spectral_distance,
    "mrstft": multi_resolution_stft_distance,
}
AUDIO_FUNCS = {
    "snr_db": snr_db,
    "si_sdr_db": si_sdr_db,
    "lsd_db": log_spectral_distance,
    "mrstft": multi_resolution_stft_distance,
}


def _noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------- elementwise metrics

# ref  = [1, 2,   3, 4  ]
# cand = [1.5, 2, 2, 4.5]
# diff = ref - cand = [-0.5, 0, 1, -0.5];  |diff| = [0.5, 0, 1, 0.5];  diff^2 = [0.25, 0, 1, 0.25]
#   max_abs  = 1
#   mean_abs = (0.5 + 0 + 1 + 0.5) / 4 = 0.5
#   rmse     = sqrt((0.25 + 0 + 1 + 0.25) / 4) = sqrt(0.375) = 0.6123724356957945
ELEMENTWISE_REF = [1.0, 2.0, 3.0, 4.0]
ELEMENTWISE_CAND = [1.5, 2.0, 2.0, 4.5]


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        pytest.param(max_abs, 1.0, id="max_abs=1"),
        pytest.param(mean_abs, 0.5, id="mean_abs=0.5"),
        pytest.param(rmse, math.sqrt(0.375), id="rmse=sqrt(0.375)"),
    ],
)
def test_elementwise_known_values(func, expected):
    assert func(ELEMENTWISE_REF, ELEMENTWISE_CAND) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("func", [max_abs, mean_abs, rmse], ids=["max_abs", "mean_abs", "rmse"])
def test_elementwise_zero_for_identical(func):
    x = _noise((3, 17))
    assert func(x, x.copy()) == 0.0


def test_computed_in_float64():
    # float32 inputs whose difference is one float32 ulp at 1.0 (2^-23): the result is that exact ulp,
    # returned as a Python float.
    ref = np.ones(4, dtype=np.float32)
    cand = ref + np.finfo(np.float32).eps
    value = max_abs(ref, cand)
    assert isinstance(value, float)
    assert value == 2.0**-23


# cosine([1,2,3], [2,3,4]) = (2 + 6 + 12) / (sqrt(1+4+9) * sqrt(4+9+16)) = 20 / sqrt(14 * 29) = 20 / sqrt(406)
#                          = 0.9925833339709303  (not 1: the vectors are not parallel)
# pearson: centred vectors are [-1, 0, 1] and [-1, 0, 1] -> correlation exactly 1.
# cosine([1,2,3], [3,2,1]) = (3 + 4 + 3) / 14 = 10/14 = 0.7142857142857143
# pearson: centred [-1, 0, 1] and [1, 0, -1] -> -1.
@pytest.mark.parametrize(
    ("ref", "cand", "expected_cosine", "expected_pearson"),
    [
        pytest.param([1, 2, 3], [2, 3, 4], 20 / math.sqrt(406), 1.0, id="offset-by-one"),
        pytest.param([1, 2, 3], [3, 2, 1], 10 / 14, -1.0, id="reversed"),
    ],
)
def test_cosine_and_pearson_differ(ref, cand, expected_cosine, expected_pearson):
    c = cosine(ref, cand)
    p = pearson(ref, cand)
    assert c == pytest.approx(expected_cosine, rel=1e-12)
    assert p == pytest.approx(expected_pearson, rel=1e-12)
    assert c != pytest.approx(p)


def test_cosine_pearson_identical_is_one():
    x = _noise(64)
    assert cosine(x, x.copy()) == 1.0
    assert pearson(x, x.copy()) == 1.0


@pytest.mark.parametrize(
    ("func", "ref", "cand"),
    [
        pytest.param(cosine, [0.0, 0.0], [1.0, 0.0], id="cosine-zero-ref"),
        pytest.param(pearson, [2.0, 2.0, 2.0], [1.0, 2.0, 3.0], id="pearson-constant-ref"),
    ],
)
def test_undefined_correlation_raises(func, ref, cand):
    with pytest.raises(MetricInputError):
        func(ref, cand)


# ------------------------------------------------------------------------------------- waveform metrics


def test_snr_known_value():
    # ref = [1,1,1,1], cand = [1,1,1,0]: sum ref^2 = 4, sum (ref - cand)^2 = 1 -> 10*log10(4) = 6.020599913 dB
    assert snr_db([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]) == pytest.approx(
        10 * math.log10(4.0), rel=1e-12
    )
    assert snr_db([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]) == pytest.approx(6.020599913, abs=1e-9)


def test_snr_identical_is_inf():
    x = _noise((2, 100))
    assert snr_db(x, x.copy()) == math.inf


def test_si_sdr_known_value():
    # ref = [3, -0.5, 2, 7], est = [2.5, 0, 2, 8], no mean removal:
    #   <est, ref> = 7.5 + 0 + 4 + 56 = 67.5;  <ref, ref> = 9 + 0.25 + 4 + 49 = 62.25
    #   alpha = 67.5 / 62.25 = 1.0843373...
    #   ||target||^2 = alpha^2 * 62.25 = 67.5^2 / 62.25 = 73.1927711
    #   ||noise||^2  = ||est||^2 - ||target||^2 (noise is orthogonal to ref) = 74.25 - 73.1927711 = 1.0572289
    #   SI-SDR = 10 * log10(73.1927711 / 1.0572289) = 10 * log10(69.2308) = 18.4030 dB
    # (with the means removed first it would be 15.0918 dB, so the value pins the variant)
    value = si_sdr_db([3.0, -0.5, 2.0, 7.0], [2.5, 0.0, 2.0, 8.0])
    assert round(value, 4) == 18.4030
    target = 67.5**2 / 62.25
    assert value == pytest.approx(10 * math.log10(target / (74.25 - target)), rel=1e-12)


@pytest.mark.parametrize("scale", [0.5, 3.0, -2.0, 1e-3], ids=["x0.5", "x3", "x-2", "x1e-3"])
def test_si_sdr_invariant_to_estimate_scaling(scale):
    ref = _noise(1000, seed=1)
    est = ref + 0.1 * _noise(1000, seed=2)
    assert si_sdr_db(ref, scale * est) == pytest.approx(si_sdr_db(ref, est), rel=1e-9)


def test_si_sdr_scaled_copy_is_very_high():
    # est = 2 * ref is a perfect scaled copy: noise energy is zero or rounding-level.
    ref = _noise(256)
    assert si_sdr_db(ref, 2.0 * ref) > 250.0
    assert si_sdr_db(ref, ref.copy()) == math.inf


# ------------------------------------------------------------------------------------- spectral metrics


def test_lsd_identical_is_zero():
    x = _noise((2, 8192))
    assert log_spectral_distance(x, x.copy(), SR) == 0.0


def test_lsd_positive_for_different():
    x = _noise((2, 8192), seed=3)
    y = x + 0.1 * _noise((2, 8192), seed=4)
    assert log_spectral_distance(x, y, SR) > 0.0


@pytest.mark.parametrize("gain", [2.0, 0.5, 10.0], ids=["g=2", "g=0.5", "g=10"])
def test_lsd_constant_gain(gain):
    # P_cand = g^2 * P_ref in every bin, so 10*log10(g^2 P) - 10*log10(P) = 20*log10(g) in every bin and
    # frame: LSD = |20*log10 g| (g=2: 6.0206 dB, g=0.5: 6.0206 dB, g=10: 20 dB) while eps << P.
    x = _noise(8192, seed=5)
    assert log_spectral_distance(x, gain * x, SR) == pytest.approx(abs(20 * math.log10(gain)), rel=1e-6)


def test_lsd_averages_over_channels():
    # channel 0 identical (LSD 0), channel 1 with gain 2 (LSD 20*log10 2 = 6.0206 dB) -> mean 3.0103 dB
    x = _noise((2, 8192), seed=6)
    y = x.copy()
    y[1] *= 2.0
    assert log_spectral_distance(x, y, SR) == pytest.approx(10 * math.log10(2.0), rel=1e-6)
    # [B, C, S] too: one batch item as above, one identical -> mean over 4 rows = 6.0206 / 4
    xb = np.stack([x, x])
    yb = np.stack([y, x])
    assert log_spectral_distance(xb, yb, SR) == pytest.approx(20 * math.log10(2.0) / 4, rel=1e-6)


def test_lsd_signal_shorter_than_fft():
    x = _noise(300, seed=7)
    assert log_spectral_distance(x, 2 * x, SR) == pytest.approx(20 * math.log10(2.0), rel=1e-6)


def test_mrstft_identical_is_zero():
    x = _noise((2, 8192), seed=8)
    assert multi_resolution_stft_distance(x, x.copy(), SR) == 0.0


@pytest.mark.parametrize("gain", [2.0, 0.5], ids=["g=2", "g=0.5"])
def test_mrstft_constant_gain(gain):
    # |S_cand| = g |S_ref| in every bin, at every resolution:
    #   SC     = ||(1 - g) |S_ref|||_F / |||S_ref|||_F = |1 - g|
    #   LogMag = mean |ln|S_ref| - ln(g |S_ref|)| = |ln g|
    # g=2: 1 + ln 2 = 1.6931472;  g=0.5: 0.5 + ln 2 = 1.1931472
    x = _noise((2, 8192), seed=9)
    expected = abs(1 - gain) + abs(math.log(gain))
    assert multi_resolution_stft_distance(x, gain * x, SR) == pytest.approx(expected, rel=1e-6)


def test_mrstft_positive_for_different():
    x = _noise(8192, seed=10)
    y = x + 0.1 * _noise(8192, seed=11)
    assert multi_resolution_stft_distance(x, y, SR) > 0.0


# ------------------------------------------------------------------------------------------------ guards


@pytest.mark.parametrize("name", list(ALL_METRICS), ids=list(ALL_METRICS))
@pytest.mark.parametrize(
    ("ref_shape", "cand_shape"),
    [
        pytest.param((4,), (3,), id="longer-ref"),
        pytest.param((3,), (4,), id="longer-cand"),
        pytest.param((4,), (1, 4), id="broadcastable"),
        pytest.param((2, 4), (4, 2), id="same-size-transposed"),
    ],
)
def test_shape_mismatch_raises(name, ref_shape, cand_shape):
    # A mismatch raises instead of truncating to the common prefix or broadcasting; the message names both.
    ref = np.ones(ref_shape)
    cand = np.ones(cand_shape)
    with pytest.raises(MetricInputError, match=r"shape mismatch") as info:
        ALL_METRICS[name](ref, cand)
    assert str(ref_shape) in str(info.value) and str(cand_shape) in str(info.value)


def test_shape_mismatch_is_not_truncation():
    # Truncating cand [1,1,1,0,5] to the reference length would make the prefix identical (max_abs 0); it must
    # raise instead.
    with pytest.raises(MetricInputError):
        max_abs([1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 5.0])
    with pytest.raises(MetricInputError):
        compute_all([1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 5.0], ["max_abs"])


@pytest.mark.parametrize("name", list(AUDIO_FUNCS), ids=list(AUDIO_FUNCS))
def test_sample_rate_mismatch_raises(name):
    x = _noise(4096, seed=12)
    func = AUDIO_FUNCS[name]
    with pytest.raises(MetricInputError, match=r"48000.*44100"):
        func(x, x.copy(), sample_rate=48000, cand_sample_rate=44100)
    # equal rates are fine
    func(x, x.copy(), sample_rate=48000, cand_sample_rate=48000)


def test_compute_all_sample_rate_mismatch_raises():
    x = _noise(4096, seed=13)
    with pytest.raises(MetricInputError, match=r"sample rate mismatch"):
        compute_all(x, x.copy(), ["snr_db"], sample_rate=48000, cand_sample_rate=44100)


@pytest.mark.parametrize("name", list(ALL_METRICS), ids=list(ALL_METRICS))
@pytest.mark.parametrize(
    ("bad_value", "where"),
    [
        pytest.param(math.nan, "ref", id="nan-in-ref"),
        pytest.param(math.nan, "cand", id="nan-in-cand"),
        pytest.param(math.inf, "cand", id="inf-in-cand"),
        pytest.param(-math.inf, "ref", id="neg-inf-in-ref"),
    ],
)
def test_non_finite_raises(name, bad_value, where):
    ref = _noise(4096, seed=14)
    cand = ref + 0.01
    (ref if where == "ref" else cand)[100] = bad_value
    with pytest.raises(MetricInputError, match=r"non-finite"):
        ALL_METRICS[name](ref, cand)
    with pytest.raises(MetricInputError, match=r"non-finite"):
        compute_all(ref, cand, [name], sample_rate=SR)


@pytest.mark.parametrize("name", list(ALL_METRICS), ids=list(ALL_METRICS))
def test_empty_raises(name):
    with pytest.raises(MetricInputError):
        ALL_METRICS[name](np.zeros(0), np.zeros(0))


# ------------------------------------------------------------------------------------------ by-name access


def test_compute_all_matches_direct_calls():
    x = _noise((2, 8192), seed=15)
    y = x + 0.05 * _noise((2, 8192), seed=16)
    names = list(METRIC_NAMES)
    out = compute_all(x, y, names, sample_rate=SR)
    assert list(out) == names
    for name in names:
        assert out[name] == ALL_METRICS[name](x, y), name
        assert isinstance(out[name], float)


def test_compute_all_unknown_name_raises():
    with pytest.raises(ValueError, match=r"unknown metric"):
        compute_all([1.0], [1.0], ["max_abs", "psnr"])


def test_metric_direction_table():
    assert set(METRIC_DIRECTION) == set(ALL_METRICS)
    assert {n for n, d in METRIC_DIRECTION.items() if d == "max"} == {
        "max_abs",
        "mean_abs",
        "rmse",
        "lsd_db",
        "mrstft",
    }
    assert {n for n, d in METRIC_DIRECTION.items() if d == "min"} == {
        "cosine",
        "pearson",
        "snr_db",
        "si_sdr_db",
    }
    assert AUDIO_METRICS == {"snr_db", "si_sdr_db", "lsd_db", "mrstft"}


@pytest.mark.parametrize(
    ("name", "value", "gate", "expected"),
    [
        pytest.param("max_abs", 1e-4, 1e-3, True, id="max_abs-below-gate-passes"),
        pytest.param("max_abs", 1e-3, 1e-3, True, id="max_abs-at-gate-passes"),
        pytest.param("max_abs", 1e-2, 1e-3, False, id="max_abs-above-gate-fails"),
        pytest.param("lsd_db", 0.5, 1.0, True, id="lsd-below-gate-passes"),
        pytest.param("mrstft", 2.0, 1.0, False, id="mrstft-above-gate-fails"),
        pytest.param("cosine", 0.9999, 0.999, True, id="cosine-above-gate-passes"),
        pytest.param("cosine", 0.99, 0.999, False, id="cosine-below-gate-fails"),
        pytest.param("pearson", 0.999, 0.999, True, id="pearson-at-gate-passes"),
        pytest.param("snr_db", math.inf, 60.0, True, id="snr-inf-passes"),
        pytest.param("si_sdr_db", 10.0, 20.0, False, id="si_sdr-below-gate-fails"),
        pytest.param("si_sdr_db", -math.inf, 20.0, False, id="si_sdr-neg-inf-fails"),
        pytest.param("lsd_db", math.nan, 1.0, False, id="nan-value-fails-max"),
        pytest.param("snr_db", math.nan, 1.0, False, id="nan-value-fails-min"),
        pytest.param("rmse", 0.0, math.nan, False, id="nan-gate-fails"),
    ],
)
def test_passes_direction(name, value, gate, expected):
    assert passes(name, value, gate) is expected


def test_passes_unknown_name_raises():
    with pytest.raises(ValueError, match=r"unknown metric"):
        passes("psnr", 30.0, 20.0)
