//! Tiled VAE decoding plan: port of `acestep_parity/host/tiling.py` (upstream CPU: chunk 256, overlap 64).

use crate::CoreError;

pub const CPU_CHUNK_SIZE: usize = 256;
pub const OVERLAP: usize = 64;
pub const MIN_OVERLAP: usize = 4;

/// One decode window `[win_start, win_end)` and the part `[core_start, core_end)` of it that is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub win_start: usize,
    pub win_end: usize,
    pub core_start: usize,
    pub core_end: usize,
}

/// The overlap actually used: halved while `chunk - 2*overlap <= 0` (floor 4).
pub fn effective_overlap(chunk_size: usize, overlap: usize) -> usize {
    let mut eff = overlap;
    while chunk_size as i64 - 2 * eff as i64 <= 0 && eff > MIN_OVERLAP {
        eff /= 2;
    }
    if eff < MIN_OVERLAP && overlap >= MIN_OVERLAP {
        eff = MIN_OVERLAP;
    }
    eff
}

/// The windows upstream decodes for a latent of `latent_frames` frames.
pub fn plan_tiles(latent_frames: usize, chunk_size: usize, overlap: usize) -> Result<Vec<Tile>, CoreError> {
    if latent_frames == 0 {
        return Err(CoreError::Invalid(format!("latent_frames must be positive, got {latent_frames}")));
    }
    let overlap = effective_overlap(chunk_size, overlap);
    if latent_frames <= chunk_size {
        return Ok(vec![Tile { win_start: 0, win_end: latent_frames, core_start: 0, core_end: latent_frames }]);
    }
    if chunk_size <= 2 * overlap {
        return Err(CoreError::Invalid(format!("chunk_size {chunk_size} must be > 2 * overlap {overlap}")));
    }
    let stride = chunk_size - 2 * overlap;
    Ok((0..latent_frames.div_ceil(stride))
        .map(|i| {
            let core_start = i * stride;
            let core_end = (core_start + stride).min(latent_frames);
            Tile {
                win_start: core_start.saturating_sub(overlap),
                win_end: latent_frames.min(core_end + overlap),
                core_start,
                core_end,
            }
        })
        .collect())
}

/// Samples to drop at the start and the end of a decoded window of `decoded_len` samples (Python's
/// `int(round(frames * factor))` with `factor = decoded_len / window_frames`, ties to even).
pub fn trim(tile: &Tile, decoded_len: usize) -> (usize, usize) {
    let factor = decoded_len as f64 / (tile.win_end - tile.win_start) as f64;
    let start = ((tile.core_start - tile.win_start) as f64 * factor).round_ties_even() as usize;
    let end = ((tile.win_end - tile.core_end) as f64 * factor).round_ties_even() as usize;
    (start, decoded_len.saturating_sub(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_latent_is_one_window() {
        let t = plan_tiles(150, CPU_CHUNK_SIZE, OVERLAP).expect("plan");
        assert_eq!(t, vec![Tile { win_start: 0, win_end: 150, core_start: 0, core_end: 150 }]);
    }

    #[test]
    fn long_latent_covers_every_frame_once() {
        for frames in [257, 300, 511, 1000, 3000] {
            let tiles = plan_tiles(frames, CPU_CHUNK_SIZE, OVERLAP).expect("plan");
            let mut next = 0;
            for t in &tiles {
                assert_eq!(t.core_start, next);
                assert!(t.win_start <= t.core_start && t.core_end <= t.win_end && t.win_end <= frames);
                next = t.core_end;
            }
            assert_eq!(next, frames);
        }
        assert_eq!(plan_tiles(300, 256, 64).expect("plan").len(), 3);
    }

    #[test]
    fn overlap_is_halved_for_small_chunks() {
        assert_eq!(effective_overlap(64, 64), 16);
        assert_eq!(effective_overlap(8, 64), 4);
        assert!(plan_tiles(0, 256, 64).is_err());
        assert!(plan_tiles(100, 8, 64).is_err());
    }

    #[test]
    fn trims_whole_frames() {
        let tile = Tile { win_start: 64, win_end: 256, core_start: 128, core_end: 192 };
        assert_eq!(trim(&tile, 192 * 1920), (64 * 1920, 128 * 1920));
    }
}
