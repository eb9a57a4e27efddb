//! Tiled VAE decoding plan: port of `runtimes/py_ort/acestep_ort/host/tiling.py` (upstream CPU: chunk 256, overlap 64), and
//! the memory-budget chunk the runtimes use instead (same overlap, so the same audio bit for bit on ONNX Runtime).

use crate::CoreError;

pub const CPU_CHUNK_SIZE: usize = 256;
pub const OVERLAP: usize = 64;
pub const MIN_OVERLAP: usize = 4;
/// Budget chunks step at least this many frames (a chunk of at least `2 * overlap + MIN_STRIDE`).
pub const MIN_STRIDE: usize = 64;
/// Largest latent the exported `vae_decoder.onnx` accepts (`exporters/specs.py`: `VAE_DECODER.axis_limits`).
pub const VAE_MAX_FRAMES: usize = 8192;
pub const DEFAULT_VAE_MEMORY_MB: usize = 4096;
/// Live float32 tensors of the widest activation size during one decode call (measured; `tiling.py`).
pub const ACTIVATION_COPIES: usize = 5;
pub const ENV_MEMORY: &str = "ACESTEP_VAE_MEMORY_MB";
pub const ENV_TILING: &str = "ACESTEP_VAE_TILING";

/// The Oobleck decoder's widths (`vae/config.json`, the manifest's `vae_shape`): `VaeShape` in Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeShape {
    pub decoder_channels: usize,
    pub channel_multiples: Vec<usize>,
    pub downsampling_ratios: Vec<usize>,
}

impl Default for VaeShape {
    /// The real 128-channel decoder (an upper bound for a manifest that does not say).
    fn default() -> Self {
        Self {
            decoder_channels: 128,
            channel_multiples: vec![1, 2, 4, 8, 16],
            downsampling_ratios: vec![2, 4, 4, 6, 10],
        }
    }
}

impl VaeShape {
    /// Floats per latent frame after conv1 and after each upsampling block (diffusers `OobleckDecoder`).
    pub fn activation_widths(&self) -> Vec<usize> {
        let mut mults = vec![1];
        mults.extend_from_slice(&self.channel_multiples);
        let n = self.downsampling_ratios.len();
        let mut widths = vec![self.decoder_channels * mults[mults.len() - 1]];
        let mut rate = 1;
        for (i, stride) in self.downsampling_ratios.iter().rev().enumerate() {
            rate *= stride;
            widths.push(self.decoder_channels * mults[n - i - 1] * rate);
        }
        widths
    }

    /// Peak bytes one latent frame costs inside one decode call.
    pub fn frame_bytes(&self) -> usize {
        ACTIVATION_COPIES * 4 * self.activation_widths().into_iter().max().unwrap_or(0)
    }
}

/// The largest chunk (latent frames) whose decode fits `memory_mb`, within `[2*overlap + MIN_STRIDE, max_frames]`.
pub fn budget_chunk(
    memory_mb: usize,
    frame_bytes: usize,
    max_frames: usize,
    overlap: usize,
) -> Result<usize, CoreError> {
    if memory_mb == 0 || frame_bytes == 0 {
        return Err(CoreError::Invalid(format!(
            "memory_mb and frame_bytes must be positive, got {memory_mb}, {frame_bytes}"
        )));
    }
    let floor = 2 * overlap + MIN_STRIDE;
    if max_frames < floor {
        return Err(CoreError::Invalid(format!(
            "max_frames {max_frames} is below the smallest chunk {floor} (overlap {overlap})"
        )));
    }
    let fit = (memory_mb as u128 * (1 << 20) / frame_bytes as u128).min(usize::MAX as u128) as usize;
    Ok(max_frames.min(floor.max(fit)))
}

/// How a runtime cuts the latent for the VAE: upstream's tiling (chunk 256) or the memory-budget chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaeChunking {
    Upstream,
    Budget { memory_mb: usize },
}

impl Default for VaeChunking {
    fn default() -> Self {
        Self::Budget { memory_mb: DEFAULT_VAE_MEMORY_MB }
    }
}

impl VaeChunking {
    /// From `ACESTEP_VAE_TILING` (budget | upstream) and `ACESTEP_VAE_MEMORY_MB` values (`None` = unset).
    pub fn parse(tiling: Option<&str>, memory_mb: Option<&str>) -> Result<Self, CoreError> {
        let memory_mb = match memory_mb.map(str::trim).filter(|m| !m.is_empty()) {
            None => DEFAULT_VAE_MEMORY_MB,
            Some(m) => m
                .parse::<usize>()
                .ok()
                .filter(|_| m.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| CoreError::Invalid(format!("{ENV_MEMORY}={m} is not a whole number of MB")))?,
        };
        if memory_mb == 0 {
            return Err(CoreError::Invalid(format!("VAE memory budget must be positive, got {memory_mb} MB")));
        }
        match tiling.map(str::trim).filter(|t| !t.is_empty()).unwrap_or("budget") {
            "budget" => Ok(Self::Budget { memory_mb }),
            "upstream" => Ok(Self::Upstream),
            other => Err(CoreError::Invalid(format!("VAE tiling mode must be budget or upstream, got {other}"))),
        }
    }

    /// From the environment (`VaeChunking.from_env` in Python).
    pub fn from_env() -> Result<Self, CoreError> {
        Self::parse(std::env::var(ENV_TILING).ok().as_deref(), std::env::var(ENV_MEMORY).ok().as_deref())
    }

    /// Latent frames per decode call.
    pub fn chunk_size(&self, vae: &VaeShape, max_frames: usize) -> Result<usize, CoreError> {
        match self {
            Self::Upstream => Ok(CPU_CHUNK_SIZE),
            Self::Budget { memory_mb } => budget_chunk(*memory_mb, vae.frame_bytes(), max_frames, OVERLAP),
        }
    }
}

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
    fn overlap_floor_and_the_smallest_budget_chunk() {
        assert_eq!(effective_overlap(129, 64), 64); // 129 - 128 = 1 > 0: kept
        assert_eq!(effective_overlap(10, 6), MIN_OVERLAP); // 6 -> 3 jumps below the floor: back to 4
        assert_eq!(effective_overlap(10, 3), 3); // asked below the floor: kept
        let floor = 2 * OVERLAP + MIN_STRIDE;
        assert_eq!(budget_chunk(1, 1 << 30, floor, OVERLAP).expect("chunk"), floor); // the limit may be the floor
        assert!(budget_chunk(1, 1 << 30, floor - 1, OVERLAP).is_err());
    }

    /// `from_env` reads the process environment: each case runs in a child test process of its own (this test,
    /// told what to expect), so no other test thread shares an environment being changed.
    #[test]
    fn chunking_comes_from_the_environment() {
        if let Ok(want) = std::env::var("ACESTEP_TILING_ENV_CHILD") {
            assert_eq!(format!("{:?}", VaeChunking::from_env()), want);
            return;
        }
        for (tiling, memory, want) in
            [("upstream", "100", "Ok(Upstream)"), ("budget", "100", "Ok(Budget { memory_mb: 100 })")]
        {
            let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", "tiling::tests::chunking_comes_from_the_environment", "--quiet"])
                .env("ACESTEP_TILING_ENV_CHILD", want)
                .env(ENV_TILING, tiling)
                .env(ENV_MEMORY, memory)
                .status()
                .expect("child test");
            assert!(status.success(), "{tiling} / {memory} MB: not {want}");
        }
    }

    #[test]
    fn budget_chunk_is_bounded() {
        let real = VaeShape::default();
        assert_eq!(real.activation_widths(), vec![2048, 10240, 30720, 61440, 122880, 245760]);
        assert_eq!(budget_chunk(1, real.frame_bytes(), VAE_MAX_FRAMES, OVERLAP).expect("chunk"), 192);
        assert_eq!(budget_chunk(1 << 30, real.frame_bytes(), VAE_MAX_FRAMES, OVERLAP).expect("chunk"), VAE_MAX_FRAMES);
        assert!(budget_chunk(0, 1, VAE_MAX_FRAMES, OVERLAP).is_err());
        assert_eq!(VaeChunking::parse(Some("upstream"), None).expect("mode"), VaeChunking::Upstream);
        assert!(VaeChunking::parse(Some("tiles"), None).is_err());
        assert!(VaeChunking::parse(None, Some("lots")).is_err());
    }

    #[test]
    fn trims_whole_frames() {
        let tile = Tile { win_start: 64, win_end: 256, core_start: 128, core_end: 192 };
        assert_eq!(trim(&tile, 192 * 1920), (64 * 1920, 128 * 1920));
    }
}
