//! Audio files, like `runtimes/py_ort/acestep_ort/host/audio.py: save_audio`: wav (float32, `hound`), flac (16-bit, `flacenc`,
//! a pure-Rust encoder) and mp3 (128 kbit/s, LAME 3.100 through `mp3lame-encoder`, the same LAME release and
//! settings as Python's `lameenc`; cargo feature `mp3`, on by default).

use std::path::Path;

use anyhow::{bail, Context, Result};
use flacenc::component::BitRepr;
use flacenc::error::Verify;

use acestep_core::audio::to_pcm16;

#[cfg(feature = "mp3")]
pub const SUPPORTED: [&str; 3] = ["wav", "flac", "mp3"];
#[cfg(not(feature = "mp3"))]
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
        #[cfg(feature = "mp3")]
        "mp3" => {
            let pcm: Vec<i16> = interleaved.map(to_pcm16_clipped).collect();
            std::fs::write(path, encode_mp3(&pcm, channels, sample_rate)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        #[cfg(not(feature = "mp3"))]
        "mp3" => bail!("{}: this build has no mp3 encoder (cargo feature `mp3`); use .wav or .flac", path.display()),
        other => bail!("unsupported audio format {other:?} for {}; use one of {SUPPORTED:?}", path.display()),
    }
    Ok(())
}

/// Python's mp3 path: `(clip(x, -1, 1) * 32767).round()` in float32, ties to even, as int16.
#[cfg(feature = "mp3")]
fn to_pcm16_clipped(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * 32767.0).round_ties_even() as i16
}

/// LAME with lameenc's settings: 128 kbit/s CBR, quality 2, no VBR tag, interleaved 16-bit input,
/// `lame_encode_flush`.
#[cfg(feature = "mp3")]
pub fn encode_mp3(pcm: &[i16], channels: usize, sample_rate: u32) -> Result<Vec<u8>> {
    use mp3lame_encoder::{Bitrate, Builder, FlushGap, InterleavedPcm, Quality};

    let err = |what: &str, e: &dyn std::fmt::Debug| anyhow::anyhow!("mp3 encoder: {what}: {e:?}");
    let mut builder = Builder::new().ok_or_else(|| anyhow::anyhow!("mp3 encoder: lame_init failed"))?;
    builder.set_num_channels(channels as u8).map_err(|e| err("channels", &e))?;
    builder.set_sample_rate(sample_rate).map_err(|e| err("sample rate", &e))?;
    builder.set_brate(Bitrate::Kbps128).map_err(|e| err("bit rate", &e))?;
    builder.set_quality(Quality::NearBest).map_err(|e| err("quality", &e))?;
    // No Xing/Info tag frame at the start (a buffer API cannot rewrite it at the end; lameenc leaves it out too).
    builder.set_to_write_vbr_tag(false).map_err(|e| err("vbr tag", &e))?;
    let mut encoder = builder.build().map_err(|e| err("init", &e))?;
    let frames = pcm.len() / channels.max(1);
    let mut out = Vec::with_capacity(frames * 5 / 4 + 7200);
    if channels == 2 {
        encoder.encode_to_vec(InterleavedPcm(pcm), &mut out).map_err(|e| err("encode", &e))?;
    } else {
        encoder.encode_to_vec(mp3lame_encoder::MonoPcm(pcm), &mut out).map_err(|e| err("encode", &e))?;
    }
    out.reserve(7200);
    encoder.flush_to_vec::<FlushGap>(&mut out).map_err(|e| err("flush", &e))?;
    Ok(out)
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
        #[cfg(feature = "mp3")]
        {
            save(&dir.join("a.mp3"), &planar, 2, 48_000).expect("mp3");
            assert!(std::fs::read(dir.join("a.mp3")).expect("read").len() > 100);
        }
        assert!(save(&dir.join("a.ogg"), &planar, 2, 48_000).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
