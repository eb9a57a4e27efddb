//! Bit-exact port of PyTorch's CPU `torch.randn` (x86-64, AVX2/AVX512 kernel), as ACE-Step draws its noise.
//!
//! Line-by-line port of `runtimes/py_ort/acestep_ort/host/noise.py` (which documents the derivation):
//!
//! * generator: `at::mt19937` seeded with `init_genrand(seed & 0xFFFF_FFFF)` ([`rand_mt::Mt`] is that engine);
//! * numel >= 16: 24-bit float uniforms, the 16-wide Box–Muller of `normal_fill_16_AVX2` with the
//!   `avx_mathfun` `log256_ps` / `sincos256_ps` polynomials in float32 and the FMA placement torch's compiler
//!   emits (`f32::mul_add` is a correctly rounded fused multiply-add); when numel % 16 != 0 the last 16
//!   outputs are recomputed from 16 extra uniforms;
//! * numel < 16: `at::normal_distribution<double>` (53-bit uniforms, libm `log1p`/`cos`/`sin`, the cached
//!   second value), each rounded to float32.

use rand_mt::Mt;

use crate::CoreError;

/// Latent channels of ACE-Step 1.5 (the DiT's `[B, T, 64]` I/O).
pub const LATENT_CHANNELS: usize = 64;

fn raw_u32(seed: u64, count: usize) -> Vec<u32> {
    let mut mt = Mt::new((seed & 0xFFFF_FFFF) as u32);
    (0..count).map(|_| mt.next_u32()).collect()
}

const LOG_P: [f32; 9] = [
    7.0376836292e-2_f64 as f32,
    -1.1514610310e-1_f64 as f32,
    1.1676998740e-1_f64 as f32,
    -1.2420140846e-1_f64 as f32,
    1.4249322787e-1_f64 as f32,
    -1.6668057665e-1_f64 as f32,
    2.0000714765e-1_f64 as f32,
    -2.4999993993e-1_f64 as f32,
    3.3333331174e-1_f64 as f32,
];
// The constants are written as in avx_mathfun.h and rounded to float32 from double, as numpy does.
const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
const LOG_Q2: f32 = 0.693359375_f64 as f32;
#[allow(clippy::excessive_precision, clippy::approx_constant)] // avx_mathfun.h's literal, verbatim
const SQRTHF: f32 = 0.707106781186547524_f64 as f32;
const FOPI: f32 = 1.27323954473516_f64 as f32; // 4/pi
#[allow(clippy::excessive_precision)] // avx_mathfun.h's literals, verbatim
const MINUS_DP: [f32; 3] =
    [-0.78515625_f64 as f32, -2.4187564849853515625e-4_f64 as f32, -3.77489497744594108e-8_f64 as f32];
const COSCOF: [f32; 3] =
    [2.443315711809948e-005_f64 as f32, -1.388731625493765e-003_f64 as f32, 4.166664568298827e-002_f64 as f32];
const SINCOF: [f32; 3] = [-1.9515295891e-4_f64 as f32, 8.3321608736e-3_f64 as f32, -1.6666654611e-1_f64 as f32];
const TWO_PI_F32: f32 = (2.0 * std::f64::consts::PI) as f32;

/// `log256_ps` of avx_mathfun.h with torch's FMA contraction, one lane; `x > 0`.
fn log_ps(x: f32) -> f32 {
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits() as i32;
    let mut e = ((bits >> 23) - 0x7F) as f32 + 1.0;
    let mut x = f32::from_bits(((bits & !0x7F80_0000) | 0.5f32.to_bits() as i32) as u32);
    let mask = x < SQRTHF;
    let tmp = if mask { x } else { 0.0 };
    x -= 1.0;
    e -= if mask { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = LOG_P[0];
    for p in &LOG_P[1..] {
        y = y.mul_add(x, *p);
    }
    y *= x;
    y = y.mul_add(z, e * LOG_Q1);
    y -= z * 0.5;
    (x + y) + e * LOG_Q2
}

/// `sincos256_ps` of avx_mathfun.h with torch's FMA contraction, one lane: `(sin, cos)`.
fn sincos_ps(x: f32) -> (f32, f32) {
    let mut sign_sin = x.is_sign_negative();
    let mut x = x.abs();
    let mut j = (x * FOPI) as i32; // cvttps: truncation
    j = (j + 1) & !1;
    let y = j as f32;
    sign_sin ^= (j & 4) != 0;
    let poly_mask = (j & 2) == 0;
    let sign_cos = (!(j - 2) & 4) != 0;
    for dp in MINUS_DP {
        x = y.mul_add(dp, x);
    }
    let z = x * x;
    let mut yc = COSCOF[0].mul_add(z, COSCOF[1]).mul_add(z, COSCOF[2]);
    yc = (yc * z).mul_add(z, -(z * 0.5));
    yc += 1.0;
    let mut ys = SINCOF[0].mul_add(z, SINCOF[1]).mul_add(z, SINCOF[2]);
    ys = (ys * z).mul_add(x, x);
    let ysin2 = if poly_mask { ys } else { 0.0 };
    let ysin1 = if poly_mask { 0.0 } else { yc };
    let s = ysin1 + ysin2;
    let c = (yc - ysin1) + (ys - ysin2);
    (if sign_sin { -s } else { s }, if sign_cos { -c } else { c })
}

/// `normal_fill_16_AVX2` on 16 uniforms, written to `out[0..16]`.
fn normal_fill_16(u: &[f32], out: &mut [f32]) {
    for k in 0..8 {
        let radius = (-2.0f32 * log_ps(1.0 - u[k])).sqrt();
        let (s, c) = sincos_ps(TWO_PI_F32 * u[k + 8]);
        // _mm256_fmadd_ps(n, std=1, mean=0) turns -0.0 into +0.0
        out[k] = radius * c + 0.0;
        out[k + 8] = radius * s + 0.0;
    }
}

fn randn_small(seed: u64, n: usize) -> Vec<f32> {
    let raw = raw_u32(seed, 4 * n.div_ceil(2));
    let mask53: u64 = (1u64 << 53) - 1;
    let scale = 2f64.powi(-53);
    let mut out = vec![0f32; n];
    let mut k = 0;
    while k < n {
        let w = &raw[2 * k..2 * k + 4];
        let u1 = ((((w[0] as u64) << 32) | w[1] as u64) & mask53) as f64 * scale;
        let u2 = ((((w[2] as u64) << 32) | w[3] as u64) & mask53) as f64 * scale;
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        out[k] = (r * theta.cos()) as f32;
        if k + 1 < n {
            out[k + 1] = (r * theta.sin()) as f32;
        }
        k += 2;
    }
    out
}

/// `torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed))` as a flat float32 vector.
///
/// Seeds are taken as torch takes them from Python: any `u64` (negative Python seeds wrap to `u64`), only the
/// low 32 bits seed the engine.
pub fn torch_randn(n: usize, seed: u64) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    if n < 16 {
        return randn_small(seed, n);
    }
    let tail = n % 16;
    let raw = raw_u32(seed, n + if tail != 0 { 16 } else { 0 });
    let scale = 2f32.powi(-24);
    let uniforms: Vec<f32> = raw.iter().map(|r| (r & 0xFF_FFFF) as f32 * scale).collect();
    let full = n - tail;
    let mut out = vec![0f32; n];
    for (u, o) in uniforms[..full].chunks_exact(16).zip(out[..full].chunks_exact_mut(16)) {
        normal_fill_16(u, o);
    }
    if tail != 0 {
        normal_fill_16(&uniforms[n..n + 16], &mut out[n - 16..]);
    }
    out
}

/// ACE-Step `prepare_noise`: one fresh generator per seed, `randn((1, frames, 64))` each, stacked to
/// `[B, frames, 64]` (returned flat, row-major).
pub fn prepare_noise(seeds: &[u64], latent_frames: usize) -> Result<Vec<f32>, CoreError> {
    if seeds.is_empty() {
        return Err(CoreError::Invalid("prepare_noise needs at least one seed".into()));
    }
    if latent_frames == 0 {
        return Err(CoreError::Invalid(format!("latent_frames must be positive, got {latent_frames}")));
    }
    let per_item = latent_frames * LATENT_CHANNELS;
    let mut out = Vec::with_capacity(per_item * seeds.len());
    for &seed in seeds {
        out.extend(torch_randn(per_item, seed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_alias_their_low_32_bits() {
        assert_eq!(torch_randn(40, 5), torch_randn(40, (1u64 << 32) + 5));
        assert_eq!(torch_randn(7, u64::MAX), torch_randn(7, (1u64 << 32) - 1));
    }

    #[test]
    fn no_negative_zero_and_finite() {
        let v = torch_randn(4096, 0);
        assert!(v.iter().all(|x| x.is_finite()));
        assert!(v.iter().all(|x| !(*x == 0.0 && x.is_sign_negative())));
    }

    #[test]
    fn prepare_noise_stacks_independent_items() {
        let both = prepare_noise(&[7, 8], 3).expect("valid");
        assert_eq!(&both[..192], torch_randn(192, 7).as_slice());
        assert_eq!(&both[192..], torch_randn(192, 8).as_slice());
        assert!(prepare_noise(&[], 3).is_err());
        assert!(prepare_noise(&[1], 0).is_err());
    }
}
