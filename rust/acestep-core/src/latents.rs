//! Latent length and context latents for text2music: port of `runtimes/py_ort/acestep_ort/host/latents.py`.

pub const SAMPLE_RATE: u32 = 48_000;
pub const HOP: usize = 1920;
pub const MIN_LATENT_FRAMES: usize = 128;
pub const DEFAULT_DURATION_S: f64 = 120.0;
pub const TIMBRE_FIX_FRAME: usize = 750;

/// Python's `round(x, 1)`: correctly rounded to one decimal, ties to even on the exact binary value.
///
/// Rust's `{:.1}` formatting rounds the exact binary value the same way, and parsing the decimal back gives
/// the float nearest to it, which is what CPython returns.
pub fn py_round1(x: f64) -> f64 {
    format!("{x:.1}").parse().unwrap_or(x)
}

/// Number of 25 Hz latent frames upstream generates for `duration` seconds.
pub fn latent_frames(duration: Option<f64>) -> usize {
    let d = match duration {
        Some(d) if d > 0.0 => d,
        _ => DEFAULT_DURATION_S,
    };
    let seconds = py_round1(d).max(0.1);
    let frames = (seconds * SAMPLE_RATE as f64) as i64; // int(): truncation
    MIN_LATENT_FRAMES.max((frames.max(0) as usize) / HOP)
}

/// The silence latent as stored on disk: `[1, channels, frames]`, row-major.
#[derive(Debug, Clone)]
pub struct SilenceLatent {
    pub channels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl SilenceLatent {
    /// `_get_silence_latent_slice`: the first `length` frames of `silence[0].T` (`[length, C]`), tiled if needed.
    pub fn slice(&self, length: usize) -> Vec<f32> {
        let c = self.channels;
        let mut out = Vec::with_capacity(length * c);
        for t in 0..length {
            let src = t % self.frames;
            for ch in 0..c {
                out.push(self.data[ch * self.frames + src]);
            }
        }
        out
    }

    /// `[B, T, 2C]`: silence source latents followed by an all-ones chunk mask.
    pub fn context_latents(&self, length: usize, batch: usize) -> Vec<f32> {
        let src = self.slice(length);
        let c = self.channels;
        let mut item = Vec::with_capacity(length * 2 * c);
        for row in src.chunks_exact(c) {
            item.extend_from_slice(row);
            item.extend(std::iter::repeat_n(1.0f32, c));
        }
        item.repeat(batch)
    }

    /// Timbre encoder input for text2music: `silence[:, :750]` (`[B, 750, C]`) and the order `0..B`.
    pub fn timbre_reference(&self, batch: usize) -> (Vec<f32>, Vec<i64>) {
        (self.slice(TIMBRE_FIX_FRAME).repeat(batch), (0..batch as i64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_rules() {
        assert_eq!(latent_frames(Some(6.0)), 150);
        assert_eq!(latent_frames(Some(6.2)), 155);
        assert_eq!(latent_frames(Some(3.0)), 128);
        assert_eq!(latent_frames(None), 3000);
        assert_eq!(latent_frames(Some(0.0)), 3000);
        assert_eq!(py_round1(6.25), 6.2);
        assert_eq!(py_round1(6.35), 6.3); // 6.35 is below the tie in binary
    }

    #[test]
    fn tiles_the_silence_latent() {
        let s = SilenceLatent { channels: 2, frames: 3, data: vec![0., 1., 2., 10., 11., 12.] };
        assert_eq!(s.slice(4), vec![0., 10., 1., 11., 2., 12., 0., 10.]);
        let ctx = s.context_latents(1, 2);
        assert_eq!(ctx, vec![0., 10., 1., 1., 0., 10., 1., 1.]);
    }

    #[test]
    fn timbre_reference_is_the_first_750_frames_per_item() {
        let frames = 800;
        let data: Vec<f32> = (0..2 * frames).map(|i| i as f32).collect();
        let s = SilenceLatent { channels: 2, frames, data };
        let (reference, order) = s.timbre_reference(3);
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(reference.len(), 3 * TIMBRE_FIX_FRAME * 2);
        let one = s.slice(TIMBRE_FIX_FRAME);
        assert_eq!(&one[..4], &[0., 800., 1., 801.]);
        assert!(reference.chunks_exact(one.len()).all(|item| item == one.as_slice()));
    }
}
