"""Bit-exact, torch-free re-implementation of PyTorch's CPU ``torch.randn``.

ACE-Step 1.5 draws its initial diffusion latent with::

    g = torch.Generator("cpu").manual_seed(seed)
    torch.randn((1, T, 64), generator=g, dtype=torch.float32)

To reproduce that noise without importing torch, this module re-implements the
exact chain of operations that torch 2.x performs on x86-64 CPUs (verified
bit-for-bit against torch 2.10.0, ``ATEN_CPU_CAPABILITY`` = AVX2 and AVX512):

1. **Generator** (``at::mt19937``): ``manual_seed(s)`` keeps the full 64-bit
   seed for ``initial_seed()`` but seeds Mersenne Twister with
   ``init_genrand(s & 0xFFFFFFFF)``.  Seeds >= 2**32 are therefore aliases of
   their low 32 bits (``2**32 + 5`` gives the same noise as ``5``), and a
   negative seed ``s`` is taken modulo 2**64 (``-1`` behaves like
   ``2**32 - 1``).  Torch rejects seeds outside ``[-2**63, 2**64 - 1]``.

2. **numel >= 16** (``normal_fill_AVX2`` in
   ``ATen/native/cpu/DistributionTemplates.h``; used for both the AVX2 and the
   AVX512 dispatch): one 32-bit draw per element gives the float uniform
   ``u = (x & 0xFFFFFF) * 2**-24``.  Each block of 16 is turned into normals by
   Box-Muller: ``u1 = 1 - u[0:8]``, ``u2 = u[8:16]``,
   ``r = sqrt(-2 * log(u1))``, ``theta = float32(2*pi) * u2``,
   ``out[0:8] = r*cos(theta)``, ``out[8:16] = r*sin(theta)``.  If ``numel % 16``
   is not 0, 16 fresh uniforms are drawn afterwards and the *last 16* outputs
   are recomputed from them (overwriting part of the last full block).
   ``log``/``sin``/``cos`` are *not* libm: they are ``log256_ps`` and
   ``sincos256_ps`` from ``avx_mathfun.h`` (Cephes polynomials in float32),
   and the compiler contracts their ``a*b + c`` steps into FMA instructions.
   Both are reproduced here operation by operation in float32, with an exact
   float32 FMA emulation (:func:`_fma_f32`); the FMA placement was determined
   experimentally (every other placement leaves 1-ulp mismatches).

3. **numel < 16** (``at::normal_distribution<double>``): each pair of outputs
   uses two 53-bit double uniforms (each from two 32-bit draws, the first one
   being the high word), ``r = sqrt(-2 * log1p(-u2))``,
   ``theta = 2*pi*u1``, first output ``r*cos(theta)``, second (cached by the
   generator) ``r*sin(theta)``; each value is rounded to float32.  The double
   math uses the platform libm through :mod:`math`, exactly like torch.

Caveat: on CPUs/builds where torch dispatches the DEFAULT capability (no AVX2,
e.g. ``ATEN_CPU_CAPABILITY=default``, or aarch64) torch takes the scalar
``normal_fill`` path with libm ``logf``/``cosf``/``sinf`` instead.  That differs from
the AVX2 kernel (and from this module) for numel >= 16: measured with torch 2.10
and ``ATEN_CPU_CAPABILITY=default``, ~39% of the elements differ, by up to
~2e-6 absolute (avx_mathfun is a few ulp off libm).  The numel < 16 path is identical on all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["torch_randn", "prepare_noise"]

_F32 = np.float32
_F64 = np.float64

# ----------------------------------------------------------------------------
# Mersenne Twister (at::mt19937)
# ----------------------------------------------------------------------------

_SEED_MIN = -(2**63)
_SEED_MAX = 2**64 - 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not _SEED_MIN <= seed <= _SEED_MAX:
        raise ValueError(f"seed {seed} is outside torch's accepted range [-2**63, 2**64-1]")
    return seed


def _mt19937_raw(seed: int, count: int) -> np.ndarray:
    """First ``count`` 32-bit outputs of torch's ``mt19937`` after ``manual_seed(seed)``.

    torch's ``mt19937_engine::init_with_uint32`` runs the reference
    ``init_genrand`` on ``seed & 0xFFFFFFFF`` (this also covers negative seeds,
    which torch maps to ``seed + 2**64``).  numpy's MT19937 bit generator has the
    identical tempering/twist, so we only build the state and let numpy draw.
    """
    s = seed & 0xFFFFFFFF
    key = np.empty(624, dtype=np.uint32)
    key[0] = s
    for i in range(1, 624):
        s = (1812433253 * (s ^ (s >> 30)) + i) & 0xFFFFFFFF
        key[i] = s
    bitgen = np.random.MT19937()
    bitgen.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}
    return bitgen.random_raw(count).astype(np.uint32)


# ----------------------------------------------------------------------------
# float32 helpers
# ----------------------------------------------------------------------------


def _fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 ``a*b + c`` (what ``vfmadd`` computes).

    The float32 product is exact in float64; the sum is rounded to float64 with
    *round-to-odd* (RN plus a TwoSum error term to fix the last bit), which makes
    the final rounding to float32 correct (53 >= 24 + 2).
    """
    p = np.asarray(a, _F32).astype(_F64) * np.asarray(b, _F32).astype(_F64)
    c64 = np.asarray(c, _F32).astype(_F64)
    s = p + c64
    # TwoSum (Knuth): bv is the share of s that came from p, av the share from c64, each set against its own
    # term (paired the other way round, err lost what lies below s's ulp where |p| << |c|: make mutants found it)
    bv = s - c64
    av = s - bv
    err = (p - bv) + (c64 - av)
    inexact_even = (err != 0) & ((s.view(np.int64) & 1) == 0)
    if inexact_even.any():
        s = np.where(inexact_even, np.nextafter(s, np.copysign(np.inf, err)), s)
    return s.astype(_F32)


def _bits_f32(i: int) -> np.float32:
    return np.array([i], dtype=np.int32).view(_F32)[0]


_LOG_P = tuple(
    _F32(v)
    for v in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)
_LOG_Q1 = _F32(-2.12194440e-4)
_LOG_Q2 = _F32(0.693359375)
_SQRTHF = _F32(0.707106781186547524)
_MIN_NORM_POS = _bits_f32(0x00800000)

_FOPI = _F32(1.27323954473516)  # 4/pi
_MINUS_DP = (_F32(-0.78515625), _F32(-2.4187564849853515625e-4), _F32(-3.77489497744594108e-8))
_COSCOF = (_F32(2.443315711809948e-005), _F32(-1.388731625493765e-003), _F32(4.166664568298827e-002))
_SINCOF = (_F32(-1.9515295891e-4), _F32(8.3321608736e-3), _F32(-1.6666654611e-1))
_HALF = _F32(0.5)
_ONE = _F32(1.0)
_ZERO = _F32(0.0)
_TWO_PI_F32 = _F32(2.0 * math.pi)  # _mm256_set1_ps(2.0f * c10::pi<double>)


def _log256_ps(x: np.ndarray) -> np.ndarray:
    """float32 ``log256_ps`` (avx_mathfun.h) with torch's FMA contraction; x > 0."""
    x = np.maximum(x.astype(_F32), _MIN_NORM_POS)
    bits = x.view(np.int32)
    e = ((bits >> 23) - 0x7F).astype(_F32) + _ONE  # bits >= 0 since x > 0
    x = ((bits & np.int32(~0x7F800000)) | _HALF.view(np.int32)).view(_F32)  # mantissa in [0.5, 1)
    mask = x < _SQRTHF
    tmp = np.where(mask, x, _ZERO)
    x = x - _ONE
    e = e - np.where(mask, _ONE, _ZERO)
    x = x + tmp
    z = x * x
    y = np.full_like(x, _LOG_P[0])
    for p in _LOG_P[1:]:
        y = _fma_f32(y, x, p)  # y = y*x + p, contracted
    y = y * x
    y = _fma_f32(y, z, e * _LOG_Q1)  # y*z + e*q1: the y*z product is the fused one
    y = y - z * _HALF  # z*0.5 is exact, so contraction would not change anything
    return (x + y) + e * _LOG_Q2  # e*q2 is exact (small integer * 9-bit constant)


def _sincos256_ps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``sincos256_ps`` (avx_mathfun.h) with torch's FMA contraction."""
    x = x.astype(_F32)
    sign_sin = np.signbit(x)
    x = np.abs(x)
    j = (x * _FOPI).astype(np.int32)  # cvttps: truncation
    j = (j + 1) & ~1
    y = j.astype(_F32)
    sign_sin = sign_sin ^ ((j & 4) != 0)
    poly_mask = (j & 2) == 0
    sign_cos = (~(j - 2) & 4) != 0
    for dp in _MINUS_DP:  # x = ((x - y*DP1) - y*DP2) - y*DP3, each step fused
        x = _fma_f32(y, dp, x)
    z = x * x
    # cosine polynomial (0 <= x <= pi/4)
    yc = _fma_f32(_fma_f32(np.full_like(x, _COSCOF[0]), z, _COSCOF[1]), z, _COSCOF[2])
    yc = _fma_f32(yc * z, z, -(z * _HALF))  # (y*z)*z - z*0.5, the first product fused
    yc = yc + _ONE
    # sine polynomial
    ys = _fma_f32(_fma_f32(np.full_like(x, _SINCOF[0]), z, _SINCOF[1]), z, _SINCOF[2])
    ys = _fma_f32(ys * z, x, x)
    ysin2 = np.where(poly_mask, ys, _ZERO)
    ysin1 = np.where(poly_mask, _ZERO, yc)
    s = ysin1 + ysin2
    c = (yc - ysin1) + (ys - ysin2)
    s = np.where(sign_sin, -s, s)  # xor with the sign bit == IEEE negation
    c = np.where(sign_cos, -c, c)
    return s, c


def _normal_fill_16_avx2(u: np.ndarray) -> np.ndarray:
    """``normal_fill_16_AVX2`` on an array of shape ``[blocks, 16]`` of uniforms."""
    u1 = _ONE - u[:, :8]
    u2 = u[:, 8:]
    radius = np.sqrt(_F32(-2.0) * _log256_ps(u1))
    sin_t, cos_t = _sincos256_ps(_TWO_PI_F32 * u2)
    out = np.concatenate([radius * cos_t, radius * sin_t], axis=1)
    # _mm256_fmadd_ps(n, std=1, mean=0): exact, but turns -0.0 into +0.0.
    return out + _ZERO


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------


def _randn_small(seed: int, n: int) -> np.ndarray:
    """numel < 16: ``at::normal_distribution<double>`` per element, cast to float32."""
    raw = [int(v) for v in _mt19937_raw(seed, 4 * ((n + 1) // 2))]
    mask53 = (1 << 53) - 1
    out = np.empty(n, dtype=_F32)
    for k in range(0, n, 2):
        w = raw[2 * k : 2 * k + 4]
        # random64() = (first 32-bit draw << 32) | second; uniform keeps the low 53 bits.
        u1 = (((w[0] << 32) | w[1]) & mask53) * 2.0**-53
        u2 = (((w[2] << 32) | w[3]) & mask53) * 2.0**-53
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        out[k] = r * math.cos(theta)
        if k + 1 < n:  # the generator's cached second Box-Muller value
            out[k + 1] = r * math.sin(theta)
    return out


def torch_randn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Reproduce ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))``.

    Returns a float32 array bit-identical to what torch (x86-64, AVX2/AVX512
    CPU kernel, float32, contiguous) produces for a *fresh* generator.  This is
    needed so that host code without torch can regenerate ACE-Step's initial
    latent noise exactly.  Reproduced behaviour (see the module docstring for
    details):

    * seeding: ``init_genrand(seed & 0xFFFFFFFF)`` -- seeds >= 2**32 alias their
      low 32 bits; negative seeds wrap modulo 2**64 like torch does;
    * numel >= 16: 24-bit float uniforms and the 16-wide AVX2 Box-Muller kernel
      (avx_mathfun ``log``/``sincos`` with FMA), the last 16 outputs recomputed
      from 16 extra uniforms when numel % 16 != 0;
    * numel < 16: scalar double Box-Muller (53-bit uniforms, ``log1p``, cached
      sine value) rounded to float32.
    """
    seed = _check_seed(seed)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    n = math.prod(shape)
    if n == 0:
        return np.zeros(shape, dtype=_F32)
    if n < 16:
        return _randn_small(seed, n).reshape(shape)
    tail = n % 16
    raw = _mt19937_raw(seed, n + (16 if tail else 0))
    uniforms = (raw & np.uint32(0xFFFFFF)).astype(_F32) * _F32(2.0**-24)
    full = n - tail
    out = np.empty(n, dtype=_F32)
    out[:full] = _normal_fill_16_avx2(uniforms[:full].reshape(-1, 16)).reshape(-1)
    if tail:
        out[full:] = uniforms[full:n]  # overwritten below, mirrors torch's buffer
        out[n - 16 :] = _normal_fill_16_avx2(uniforms[n:].reshape(1, 16)).reshape(-1)
    return out.reshape(shape)


def prepare_noise(seeds: Sequence[int], latent_frames: int, channels: int = 64) -> np.ndarray:
    """Reproduce ACE-Step 1.5 ``prepare_noise`` for an explicit list of seeds.

    Upstream builds one fresh ``torch.Generator("cpu").manual_seed(s)`` per batch
    item, draws ``torch.randn((1, latent_frames, channels), generator=g)`` and
    concatenates along the batch axis; this returns the same ``[B, T, C]``
    float32 array (each item via :func:`torch_randn`, so items are independent
    of batch position).  A seed that is ``None`` or negative raises
    ``ValueError``: upstream would fall back to unseeded (non-reproducible)
    noise there, which a parity harness must refuse.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("prepare_noise needs at least one seed")
    if latent_frames <= 0 or channels <= 0:
        raise ValueError(f"latent_frames and channels must be positive, got {latent_frames}, {channels}")
    for s in seeds:
        if s is None:
            raise ValueError("seed None would mean unseeded noise upstream; refusing (not reproducible)")
        if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s < 0:
            raise ValueError(f"negative seed {s} would mean unseeded noise upstream; refusing")
    return np.concatenate([torch_randn((1, latent_frames, channels), s) for s in seeds], axis=0)
