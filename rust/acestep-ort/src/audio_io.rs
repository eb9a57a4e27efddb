//! Audio files: wav (float32, `hound`) and flac (16-bit, `flacenc`, a pure-Rust encoder), like
//! `acestep_parity/host/audio.py: save_audio`. mp3 is not available in the Rust runtime (no well-kept
//! pure-Rust LAME-quality encoder builds offline here); asking for it is a clear error.

use std::path::Path;

use anyhow::{bail, Context, Result};
use flacenc::component::BitRepr;
use flacenc::error::Verify;

use acestep_core::audio::to_pcm16;

pub const SUPPORTED: [&str; 2] = ["wav", "flac"];

/// Write one item (`channels` planar rows of `samples`) to `path`, the format chosen by the extension.
pub fn save(path: &Path, planar: &[f32], channels: usize, sample_rate: u32) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if channels == 0 || !planar.len().is_multiple_of(channels) {
        bail!("expected [channels, samples] audio, got {} values for {channels} channels", planar.len());
    }
    let samples = planar.len() / channels;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let interleaved = (0..samples).flat_map(|s| (0..channels).map(move |c| planar[c * samples + s]));
    match ext.as_str() {
        "wav" => {
            let spec = hound::WavSpec {
                channels: channels as u16,
                sample_rate,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            };
            let mut w =
                hound::WavWriter::create(path, spec).with_context(|| format!("cannot write {}", path.display()))?;
            for x in interleaved {
                w.write_sample(x)?;
            }
            w.finalize().with_context(|| format!("cannot finish {}", path.display()))?;
        }
        "flac" => {
            let pcm: Vec<i32> = interleaved.map(|x| to_pcm16(x) as i32).collect();
            let config = flacenc::config::Encoder::default()
                .into_verified()
                .map_err(|(_, e)| anyhow::anyhow!("flac encoder config: {e:?}"))?;
            let source = flacenc::source::MemSource::from_samples(&pcm, channels, 16, sample_rate as usize);
            let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
                .map_err(|e| anyhow::anyhow!("flac encoding failed: {e:?}"))?;
            let mut sink = flacenc::bitsink::ByteSink::new();
            stream.write(&mut sink).map_err(|e| anyhow::anyhow!("flac encoding failed: {e:?}"))?;
            std::fs::write(path, sink.as_slice()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        "mp3" => bail!(
            "{}: mp3 output is not available in the Rust runtime (no well-kept pure-Rust mp3 encoder builds here); \
             use .wav or .flac",
            path.display()
        ),
        other => bail!("unsupported audio format {other:?} for {}; use one of {SUPPORTED:?}", path.display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips_float32_and_flac_has_a_stream_header() {
        let dir = std::env::temp_dir().join(format!("acestep-audio-io-{}", std::process::id()));
        let planar: Vec<f32> = (0..200).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
        save(&dir.join("a.wav"), &planar, 2, 48_000).expect("wav");
        let mut r = hound::WavReader::open(dir.join("a.wav")).expect("read");
        assert_eq!(r.spec().channels, 2);
        let back: Vec<f32> = r.samples::<f32>().map(|s| s.expect("sample")).collect();
        let interleaved: Vec<f32> = (0..100).flat_map(|s| [planar[s], planar[100 + s]]).collect();
        assert_eq!(back, interleaved);
        save(&dir.join("a.flac"), &planar, 2, 48_000).expect("flac");
        assert_eq!(&std::fs::read(dir.join("a.flac")).expect("read")[..4], b"fLaC");
        assert!(save(&dir.join("a.mp3"), &planar, 2, 48_000).is_err());
        assert!(save(&dir.join("a.ogg"), &planar, 2, 48_000).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
