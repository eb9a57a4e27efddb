"""acestep_ort.host.noise must reproduce torch's CPU ``torch.randn`` bit for bit.

The numpy implementation is exact (no tolerance): every comparison with torch
uses ``np.array_equal`` on float32 and records max_abs_diff / mismatch_fraction.
torch is only needed for the comparisons; the torch-free tests run without it.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

from acestep_ort.host import noise
from acestep_ort.host.noise import prepare_noise, torch_randn

SEEDS = [0, 1, 42, 1234, 2**31 - 1, 2**32 - 1, 3_141_592, 271_828_182, 987_654_321]
NUMELS = [1, 2, 3, 15, 16, 17, 31, 32, 33, 1000]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def avx2_torch(torch):
    """torch whose float32 randn (numel >= 16) runs the AVX2 kernel we reproduce.

    With the DEFAULT capability (no AVX2, ATEN_CPU_CAPABILITY=default, aarch64)
    torch uses libm logf/cosf/sinf instead (~39% of elements differ, up to ~2e-6).
    """
    cap = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() not in ("x86_64", "amd64") or cap not in ("AVX2", "AVX512"):
        pytest.skip(f"torch CPU capability {cap} on {platform.machine()} does not use normal_fill_AVX2")
    return torch


def _torch_randn(torch, shape, seed):
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32).numpy()


def _compare(record_property, ours, ref, label):
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    mismatch = float(np.mean(ours != ref)) if diff.size else 0.0
    record_property(f"{label}.max_abs_diff", max_abs)
    record_property(f"{label}.mismatch_fraction", mismatch)
    assert np.array_equal(ours, ref), f"{label}: max_abs_diff={max_abs:.3g}, mismatch_fraction={mismatch:.3g}"
    # Bit-identical, including the sign of zeros.
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("numel", NUMELS)
def test_torch_randn_matches_torch(avx2_torch, record_property, numel):
    for seed in SEEDS:
        _compare(
            record_property,
            torch_randn((numel,), seed),
            _torch_randn(avx2_torch, (numel,), seed),
            f"seed{seed}.n{numel}",
        )


def test_scalar_path_matches_torch_on_any_capability(torch, record_property):
    # numel < 16 uses at::normal_distribution<double> + libm on every CPU capability.
    for seed in SEEDS:
        for numel in range(1, 16):
            _compare(
                record_property,
                torch_randn((numel,), seed),
                _torch_randn(torch, (numel,), seed),
                f"seed{seed}.n{numel}",
            )


def test_multidim_shapes_match_torch(avx2_torch, record_property):
    for shape in [(3, 5), (2, 3, 4), (1, 7, 64), (4, 4)]:
        _compare(record_property, torch_randn(shape, 7), _torch_randn(avx2_torch, shape, 7), f"shape{shape}")


def test_large_seeds_alias_low_32_bits(torch, record_property):
    # torch's manual_seed keeps the 64-bit value but seeds mt19937 with seed & 0xFFFFFFFF;
    # negative seeds wrap modulo 2**64.
    for seed in [2**32, 2**32 + 5, 2**40 + 123, 2**63, 2**64 - 1, -1, -(2**63)]:
        ours = torch_randn((20,), seed)
        np.testing.assert_array_equal(ours, torch_randn((20,), seed & 0xFFFFFFFF))
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            _compare(record_property, ours, _torch_randn(torch, (20,), seed), f"seed{seed}.n20")
        _compare(record_property, torch_randn((3,), seed), _torch_randn(torch, (3,), seed), f"seed{seed}.n3")


def test_rng_stream_statistics_random_seeds(avx2_torch, record_property):
    rng = np.random.default_rng(20240601)
    for seed in rng.integers(0, 2**32, size=4):
        seed = int(seed)
        _compare(
            record_property,
            torch_randn((4099,), seed),
            _torch_randn(avx2_torch, (4099,), seed),
            f"seed{seed}.n4099",
        )


@pytest.mark.parametrize(
    ("seeds", "frames"),
    [([0], 128), ([42], 301), ([1234, 2**31 - 1], 250), ([7, 7, 8], 33)],
)
def test_prepare_noise_matches_torch(avx2_torch, record_property, seeds, frames):
    ours = prepare_noise(seeds, frames)
    ref = np.concatenate([_torch_randn(avx2_torch, (1, frames, 64), s) for s in seeds], axis=0)
    assert ours.shape == (len(seeds), frames, 64)
    _compare(record_property, ours, ref, f"prepare_noise{tuple(seeds)}x{frames}")


def test_known_values_without_torch():
    # Captured from torch 2.10.0 (x86-64, AVX512): Generator().manual_seed(0).
    assert torch_randn((1,), 0)[0] == np.float32(1.5409960746765137)
    first4 = [
        float.fromhex(h) for h in ("-0x1.20370ap+0", "-0x1.270114p+0", "-0x1.0097acp-2", "-0x1.bc4abap-2")
    ]
    np.testing.assert_array_equal(torch_randn((16,), 0)[:4], np.array(first4, dtype=np.float32))


def test_deterministic_and_seed_dependent():
    a = prepare_noise([5, 6], 40)
    b = prepare_noise([5, 6], 40)
    assert a.dtype == np.float32 and a.shape == (2, 40, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])
    # Each item uses its own fresh generator, so it does not depend on batch position.
    np.testing.assert_array_equal(prepare_noise([6], 40)[0], a[1])
    assert not np.array_equal(torch_randn((100,), 1), torch_randn((100,), 2))
    # Sanity: it is standard normal noise.
    big = torch_randn((1, 2000, 64), 99)
    assert abs(float(big.mean())) < 0.02 and abs(float(big.std()) - 1.0) < 0.02


@pytest.mark.parametrize("bad", [None, -1, -42])
def test_prepare_noise_rejects_unseeded(bad):
    with pytest.raises(ValueError):
        prepare_noise([1, bad], 16)


def test_input_validation():
    with pytest.raises(ValueError):
        prepare_noise([], 16)
    with pytest.raises(ValueError):
        torch_randn((4,), 2**64)
    with pytest.raises(ValueError):
        torch_randn((4,), -(2**63) - 1)
    with pytest.raises(TypeError):
        torch_randn((4,), 1.5)
    assert torch_randn((0, 64), 3).shape == (0, 64)


# ------------------------------------------------------------------- mutants left alive by the tests above (make mutants)


def _exact_fma_f32(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """a*b + c exactly (fractions), then rounded once to float32 (to nearest, ties to even)."""
    from fractions import Fraction

    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    lo = np.float32(float(exact))  # float() rounds to double: find the two float32 neighbours around it
    lo = lo if Fraction(float(lo)) <= exact else np.nextafter(lo, np.float32(-np.inf))
    hi = np.nextafter(lo, np.float32(np.inf)) if Fraction(float(lo)) != exact else lo
    d_lo, d_hi = exact - Fraction(float(lo)), Fraction(float(hi)) - exact
    if d_lo != d_hi:
        return lo if d_lo < d_hi else hi
    return lo if (lo.view(np.int32) & 1) == 0 else hi


def test_fma_f32_rounds_once_where_double_rounding_would_not():
    """``_fma_f32`` claims a correctly rounded a*b + c; the cases where rounding to float64 first lands exactly on
    a float32 midpoint need its round-to-odd fix (1 + 2**-15 times 1 - 2**-15 is 1 - 2**-30)."""
    f = np.float32
    one_up, one_down, big = f(1 + 2**-15), f(1 - 2**-15), f(2**24 + 2)
    crafted = [(one_up, one_down, -big), (one_up, -one_down, big), (one_up, one_down, big), (f(3), f(5), f(-7)),
               (f(1), f(1), f(2**24)), (f(1), f(1), -big),  # exact midpoints (2**24 + 1): ties to even, no nudge
               (f(797728), f(673), f(-(2**-25))),  # 2**29 + 32 - 2**-25: the lost part is c's, not a*b's
               (f(795728), f(673), f(3 * 2**-26))]  # a sum one float64 step under a midpoint: odd, left alone
    rng = np.random.default_rng(3)
    randoms = rng.standard_normal((200, 3)).astype(np.float32) * np.float32(1e3)
    cases = crafted + [tuple(row) for row in randoms]
    a, b, c = (np.array([case[i] for case in cases], dtype=np.float32) for i in range(3))
    got = noise._fma_f32(a, b, c)
    want = np.array([_exact_fma_f32(*case) for case in cases], dtype=np.float32)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # the crafted ones: the naive float64-then-float32 sum is off by one float32 step there
    naive = (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)
    assert list(naive[:2] != want[:2]) == [True, True]


def test_box_muller_turns_negative_zero_into_positive_zero():
    """A uniform of 0 in the radius half gives radius sqrt(-0.0) = -0.0; times cos(0) = 1 and sin(0) = 0 that is
    -0.0, which torch's fused ``n * std + mean`` turns into +0.0."""
    u = np.zeros((1, 16), dtype=np.float32)
    out = noise._normal_fill_16_avx2(u)
    assert np.all(out == 0) and not np.any(np.signbit(out))


def test_prepare_noise_refusals_name_the_problem():
    assert prepare_noise([3], 1, 1).shape == (1, 1, 1)  # the smallest noise there is
    np.testing.assert_array_equal(prepare_noise([3], 1, 1).reshape(-1), torch_randn((1,), 3))
    with pytest.raises(ValueError, match=r"^prepare_noise needs at least one seed$"):
        prepare_noise([], 16)
    with pytest.raises(ValueError, match=r"^latent_frames and channels must be positive, got 0, 64$"):
        prepare_noise([1], 0)
    with pytest.raises(ValueError, match=r"^latent_frames and channels must be positive, got 5, 0$"):
        prepare_noise([1], 5, 0)
    with pytest.raises(ValueError, match=r"^seed None would mean unseeded noise upstream; refusing \(not "
                                         r"reproducible\)$"):
        prepare_noise([1, None], 16)
    with pytest.raises(ValueError, match=r"^negative seed -4 would mean unseeded noise upstream; refusing$"):
        prepare_noise([1, -4], 16)


def test_seed_and_shape_refusals_name_the_problem():
    with pytest.raises(TypeError, match=r"^seed must be an int, got float$"):
        torch_randn((4,), 1.5)
    with pytest.raises(ValueError, match=r"^seed 18446744073709551616 is outside torch's accepted range "
                                         r"\[-2\*\*63, 2\*\*64-1\]$"):
        torch_randn((4,), 2**64)
    with pytest.raises(ValueError, match=r"^negative dimension in shape \(2, -1\)$"):
        torch_randn((2, -1), 0)
    assert torch_randn((0, 64), 3).dtype == np.float32
