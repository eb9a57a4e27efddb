//! Audio post-processing: port of `runtimes/py_ort/acestep_ort/host/audio.py` (anti-clipping, -1 dBFS peak normalisation).
//! Audio is `[B, C, S]` float32, row-major; items are processed one by one.

pub const NORMALIZATION_DB: f64 = -1.0;

/// How many samples are NaN or infinite.
pub fn non_finite_count(audio: &[f32]) -> usize {
    audio.iter().filter(|x| !x.is_finite()).count()
}

/// `Err(message)` naming `source` when any sample is not finite: no runtime writes non-finite audio
/// (port of `check_finite` in `host/audio.py`, same message).
pub fn check_finite(audio: &[f32], source: &str) -> Result<(), String> {
    let bad = non_finite_count(audio);
    if bad == 0 {
        return Ok(());
    }
    Err(format!(
        "{source} returned {bad} non-finite samples of {} (NaN or infinity): the graph is damaged or the decode \
         failed; no audio written",
        audio.len()
    ))
}

fn peak(item: &[f32]) -> f64 {
    item.iter().fold(0f32, |m, x| m.max(x.abs())) as f64
}

/// Per item `wav / max(peak, 1)` when `peak = max|wav| > 1` (a float32 division, as numpy).
pub fn anti_clip(audio: &mut [f32], batch: usize) {
    if batch == 0 {
        return;
    }
    let per_item = audio.len() / batch;
    for item in audio.chunks_exact_mut(per_item) {
        let p = peak(item);
        if p > 1.0 {
            let d = p as f32;
            item.iter_mut().for_each(|x| *x /= d);
        }
    }
}

/// The float32 gain for an item of peak `peak`: `float32(10**(target_db/20) / peak)`.
pub fn normalization_gain(peak: f64, target_db: f64) -> f32 {
    (10f64.powf(target_db / 20.0) / peak) as f32
}

/// Per item gain `10**(target_db/20) / peak`; items with a peak below 1e-6 are left as they are.
pub fn normalize_peak(audio: &mut [f32], batch: usize, target_db: f64) {
    if batch == 0 {
        return;
    }
    let per_item = audio.len() / batch;
    for item in audio.chunks_exact_mut(per_item) {
        let p = peak(item);
        if p >= 1e-6 {
            let g = normalization_gain(p, target_db);
            item.iter_mut().for_each(|x| *x *= g);
        }
    }
}

/// 16-bit PCM of a float sample as libsndfile writes it for py_ort's flac (soundfile, `PCM_16`):
/// `lrintf(x * 0x8000)` (ties to even), clipped to [-32768, 32767].
pub fn to_pcm16(x: f32) -> i16 {
    (x * 32768.0).round_ties_even().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anti_clip_only_above_one() {
        let mut a = vec![0.5, -2.0, 0.25, 0.5];
        anti_clip(&mut a, 2);
        assert_eq!(a, vec![0.25, -1.0, 0.25, 0.5]);
    }

    #[test]
    fn non_finite_audio_is_refused_with_the_count() {
        assert_eq!(check_finite(&[0.0, 1.0], "vae"), Ok(()));
        let bad = [0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(non_finite_count(&bad), 3);
        assert_eq!(
            check_finite(&bad, "vae"),
            Err("vae returned 3 non-finite samples of 4 (NaN or infinity): the graph is damaged or the decode \
                 failed; no audio written"
                .to_string())
        );
    }

    #[test]
    fn pcm16_is_lrintf_of_x_times_32768_clipped() {
        assert_eq!(to_pcm16(0.5), 16384);
        assert_eq!(to_pcm16(-0.25), -8192);
        assert_eq!(to_pcm16(-1.0), -32768);
        assert_eq!(to_pcm16(1.0), 32767); // 32768 clipped
        assert_eq!(to_pcm16(2.0), 32767);
        assert_eq!(to_pcm16(1.0 / 65536.0), 0); // 0.5: ties to even
        assert_eq!(to_pcm16(3.0 / 65536.0), 2); // 1.5: ties to even
    }

    #[test]
    fn normalizes_to_minus_one_dbfs_and_skips_silence() {
        let mut a = vec![0.5f32, -0.25, 0.0, 1e-7];
        normalize_peak(&mut a, 2, NORMALIZATION_DB);
        let target = 10f64.powf(-0.05);
        assert!((a[0] as f64 - target).abs() < 1e-7);
        assert_eq!(&a[2..], &[0.0, 1e-7]);
    }
}
