//! The text2music / turbo / ODE orchestration: a line-by-line port of `run_text2music` in
//! `runtimes/py_ort/acestep_ort/host/pipeline.py` driving the graphs the way `runtimes/py_ort/acestep_ort/pipeline.py` feeds them.
//! Same stages, same order, same dtypes, same capture names, so the Rust and Python runtimes agree bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use acestep_core::case::{Case, MusicFields};
use acestep_core::latents::{latent_frames, SilenceLatent};
use acestep_core::{assets, audio, noise, prompts, schedule, tiling};
use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use ort::value::{DynValue, Tensor as OrtTensor};

use crate::dylib::LoadedRuntime;
use crate::sessions::{SessionConfig, Sessions, GRAPHS};
use crate::tensor::{Arrays, Tensor};
use crate::tokenizer::TextTokenizer;

/// What one text2music generation needs (a case file maps onto this; `GenerationRequest` in Python).
#[derive(Debug, Clone)]
pub struct Request {
    pub music: MusicFields,
    pub seeds: Vec<u64>,
    pub shift: f64,
    pub timesteps: Option<Vec<f64>>,
    pub instruction: String,
}

impl Request {
    pub fn from_case(case: &Case) -> Self {
        Self {
            music: case.music.clone(),
            seeds: case.seeds.clone(),
            shift: case.shift,
            timesteps: case.timesteps.clone(),
            instruction: prompts::DEFAULT_DIT_INSTRUCTION.into(),
        }
    }

    pub fn batch_size(&self) -> usize {
        self.seeds.len()
    }
}

/// Every capture point of a run and the time per stage.
#[derive(Debug, Default)]
pub struct Captures {
    pub arrays: Arrays,
    pub timings: Vec<(String, f64)>,
}

/// Progress callback: `(stage, done, total)` for "dit" steps and "vae" tiles.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

fn f32_value(shape: &[usize], data: Vec<f32>) -> Result<DynValue> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)?;
    Ok(OrtTensor::from_array(a)?.into_dyn())
}

fn i64_value(shape: &[usize], data: Vec<i64>) -> Result<DynValue> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)?;
    Ok(OrtTensor::from_array(a)?.into_dyn())
}

fn bool_value(shape: &[usize], data: Vec<bool>) -> Result<DynValue> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)?;
    Ok(OrtTensor::from_array(a)?.into_dyn())
}

/// A 0/1 mask converted to the dtype the graph declares (`astype(dtype)` in py_ort).
fn mask_value(dtype: &str, shape: &[usize], mask: &[bool]) -> Result<DynValue> {
    match dtype {
        "int64" => i64_value(shape, mask.iter().map(|&m| m as i64).collect()),
        "bool" => bool_value(shape, mask.to_vec()),
        "float32" => f32_value(shape, mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect()),
        other => bail!("unsupported mask dtype {other}"),
    }
}

fn extract_f32(graph: &str, v: &DynValue) -> Result<ArrayD<f32>> {
    Ok(v.try_extract_array::<f32>().with_context(|| format!("{graph}.onnx: output is not float32"))?.to_owned())
}

/// `.astype(bool)` of an output mask of any supported dtype.
fn extract_mask(graph: &str, v: &DynValue) -> Result<ArrayD<bool>> {
    if let Ok(a) = v.try_extract_array::<bool>() {
        return Ok(a.to_owned());
    }
    if let Ok(a) = v.try_extract_array::<i64>() {
        return Ok(a.mapv(|x| x != 0));
    }
    if let Ok(a) = v.try_extract_array::<f32>() {
        return Ok(a.mapv(|x| x != 0.0));
    }
    bail!("{graph}.onnx: output mask is neither bool, int64 nor float32")
}

/// The ONNX Runtime engine: sessions, tokenizer and silence latent of one ONNX folder.
pub struct Engine {
    pub dir: PathBuf,
    pub runtime: LoadedRuntime,
    pub sessions: Sessions,
    pub tokenizer: Option<TextTokenizer>,
    pub silence: Option<SilenceLatent>,
    pub manifest: Option<serde_json::Value>,
    pub config: SessionConfig,
    pub load_seconds: f64,
}

impl Engine {
    /// Open an ONNX folder (graphs + manifest + assets). `graphs` limits the sessions (e.g. the DiT alone).
    pub fn open(
        dir: &Path,
        runtime: LoadedRuntime,
        env: &ort::environment::Environment,
        config: SessionConfig,
        graphs: Option<&[&str]>,
    ) -> Result<Self> {
        let start = Instant::now();
        if !dir.is_dir() {
            bail!(
                "ONNX folder {} does not exist; export one with `acestep-export --out {}`",
                dir.display(),
                dir.display()
            );
        }
        let manifest = assets::read_manifest(dir)?;
        let full = graphs.is_none();
        let (tokenizer, silence) = if full {
            let missing = assets::missing(dir);
            if missing.iter().any(|m| m != assets::SILENCE_LATENT) {
                let hint = assets::onnx_folder_hint(dir);
                let hint = if hint.is_empty() {
                    format!("; export with `acestep-export --out {}` (it copies them)", dir.display())
                } else {
                    hint
                };
                bail!("{} is not an exported ONNX folder: it lacks {}{hint}", dir.display(), missing.join(", "));
            }
            let (tokenizer_json, tokenizer_config) = assets::tokenizer_paths(dir);
            let tokenizer = TextTokenizer::load(&tokenizer_json, Some(&tokenizer_config))?;
            (Some(tokenizer), Some(assets::load_folder_silence_latent(dir, manifest.as_ref())?))
        } else {
            (None, None)
        };
        let sessions = Sessions::open(env, dir, graphs.unwrap_or(&GRAPHS), &config, manifest.as_ref())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            runtime,
            sessions,
            tokenizer,
            silence,
            manifest,
            config,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    fn tokenizer(&mut self) -> Result<&mut TextTokenizer> {
        self.tokenizer.as_mut().ok_or_else(|| anyhow!("this engine was opened without the tokenizer"))
    }

    pub fn tokenize(&mut self, text: &str, max_length: usize) -> Result<Vec<i64>> {
        Ok(self.tokenizer()?.encode(text, max_length)?)
    }

    pub fn encode_text(&mut self, ids: &[i64], shape: &[usize]) -> Result<ArrayD<f32>> {
        let g = self.sessions.get("text_encoder")?;
        let out = g.run(vec![("input_ids".into(), i64_value(shape, ids.to_vec())?)])?;
        extract_f32("text_encoder", &out[0])
    }

    pub fn embed_lyrics(&mut self, ids: &[i64], shape: &[usize]) -> Result<ArrayD<f32>> {
        let g = self.sessions.get("lyric_embedding")?;
        let out = g.run(vec![("input_ids".into(), i64_value(shape, ids.to_vec())?)])?;
        extract_f32("lyric_embedding", &out[0])
    }

    #[allow(clippy::too_many_arguments)]
    pub fn encode_condition(
        &mut self,
        text_hidden: &ArrayD<f32>,
        text_mask: &ArrayD<bool>,
        lyric_hidden: &ArrayD<f32>,
        lyric_mask: &ArrayD<bool>,
        timbre: (Vec<f32>, Vec<usize>),
        order: &[i64],
    ) -> Result<(ArrayD<f32>, ArrayD<bool>)> {
        if order.iter().enumerate().any(|(i, &o)| o != i as i64) {
            bail!("condition_encoder.onnx takes one timbre reference per item in batch order");
        }
        let g = self.sessions.get("condition_encoder")?;
        let text_dtype = g.input_dtype("text_attention_mask")?.to_string();
        let lyric_dtype = g.input_dtype("lyric_attention_mask")?.to_string();
        let tm: Vec<bool> = text_mask.iter().copied().collect();
        let lm: Vec<bool> = lyric_mask.iter().copied().collect();
        let feeds = vec![
            ("text_hidden_states".to_string(), OrtTensor::from_array(text_hidden.clone())?.into_dyn()),
            ("text_attention_mask".to_string(), mask_value(&text_dtype, text_mask.shape(), &tm)?),
            ("lyric_hidden_states".to_string(), OrtTensor::from_array(lyric_hidden.clone())?.into_dyn()),
            ("lyric_attention_mask".to_string(), mask_value(&lyric_dtype, lyric_mask.shape(), &lm)?),
            ("timbre_reference".to_string(), f32_value(&timbre.1, timbre.0)?),
        ];
        let out = g.run(feeds)?;
        Ok((extract_f32("condition_encoder", &out[0])?, extract_mask("condition_encoder", &out[1])?))
    }

    /// One DiT evaluation: `vt = dit(xt, t, t, enc, ctx)` (text2music passes `timestep_r = timestep`).
    pub fn dit(
        &mut self,
        xt: &ArrayD<f32>,
        t: &ArrayD<f32>,
        encoder_hidden_states: &ArrayD<f32>,
        context_latents: &ArrayD<f32>,
    ) -> Result<ArrayD<f32>> {
        let g = self.sessions.get("dit_decoder")?;
        let feeds = vec![
            ("hidden_states".to_string(), OrtTensor::from_array(xt.clone())?.into_dyn()),
            ("timestep".to_string(), OrtTensor::from_array(t.clone())?.into_dyn()),
            ("timestep_r".to_string(), OrtTensor::from_array(t.clone())?.into_dyn()),
            ("encoder_hidden_states".to_string(), OrtTensor::from_array(encoder_hidden_states.clone())?.into_dyn()),
            ("context_latents".to_string(), OrtTensor::from_array(context_latents.clone())?.into_dyn()),
        ];
        let out = g.run(feeds)?;
        extract_f32("dit_decoder", &out[0])
    }

    /// `[1, C, t]` latents -> `[1, channels, t * 1920]` audio.
    pub fn decode_latents(&mut self, latents: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let g = self.sessions.get("vae_decoder")?;
        let out = g.run(vec![("latents".into(), OrtTensor::from_array(latents)?.into_dyn())])?;
        extract_f32("vae_decoder", &out[0])
    }

    /// `run_text2music`: every capture point of one request.
    pub fn generate(&mut self, request: &Request, mut progress: Option<Progress<'_>>) -> Result<Captures> {
        let mut caps = Captures::default();
        let batch = request.batch_size();
        if batch == 0 {
            bail!("a request needs at least one seed");
        }
        let silence =
            self.silence.clone().ok_or_else(|| anyhow!("this engine was opened without the silence latent"))?;
        let pad_id = self.tokenizer()?.pad_id;
        let mut clock = Instant::now();
        let mut lap = |caps: &mut Captures, stage: &str| {
            let now = Instant::now();
            let dt = (now - clock).as_secs_f64();
            match caps.timings.iter_mut().find(|(s, _)| s == stage) {
                Some(slot) => slot.1 += dt,
                None => caps.timings.push((stage.to_string(), dt)),
            }
            clock = now;
        };

        // encoder_inputs: prompts, token ids (the same row for every item), right padding and masks
        let music = &request.music;
        let metas = prompts::metas_string(music.bpm, &music.keyscale, &music.timesignature, music.duration);
        let caption_text = prompts::caption_prompt(&music.caption, &metas, &request.instruction);
        let lyric_text = prompts::lyric_prompt(&music.lyrics, &music.language);
        let text_row = self.tokenize(&caption_text, prompts::TEXT_MAX_TOKENS)?;
        let lyric_row = self.tokenize(&lyric_text, prompts::LYRIC_MAX_TOKENS)?;
        let (text_ids, text_mask) = pad_right(&vec![text_row; batch], pad_id)?;
        let (lyric_ids, lyric_mask) = pad_right(&vec![lyric_row; batch], pad_id)?;
        let a = &mut caps.arrays;
        a.insert("text_token_ids", Tensor::I64(text_ids.clone()));
        a.insert("text_attention_mask", Tensor::Bool(text_mask.clone()));
        a.insert("lyric_token_ids", Tensor::I64(lyric_ids.clone()));
        a.insert("lyric_attention_mask", Tensor::Bool(lyric_mask.clone()));
        lap(&mut caps, "tokenize");

        let ids: Vec<i64> = text_ids.iter().copied().collect();
        let text_hidden = self.encode_text(&ids, text_ids.shape())?;
        caps.arrays.insert("text_hidden_states", Tensor::F32(text_hidden.clone()));
        lap(&mut caps, "text_encoder");
        let ids: Vec<i64> = lyric_ids.iter().copied().collect();
        let lyric_hidden = self.embed_lyrics(&ids, lyric_ids.shape())?;
        caps.arrays.insert("lyric_hidden_states", Tensor::F32(lyric_hidden.clone()));
        lap(&mut caps, "lyric_embedding");
        let (timbre, order) = silence.timbre_reference(batch);
        let timbre_shape = vec![batch, acestep_core::latents::TIMBRE_FIX_FRAME, silence.channels];
        let (enc, enc_mask) = self.encode_condition(
            &text_hidden,
            &text_mask,
            &lyric_hidden,
            &lyric_mask,
            (timbre, timbre_shape),
            &order,
        )?;
        caps.arrays.insert("encoder_hidden_states", Tensor::F32(enc.clone()));
        caps.arrays.insert("encoder_attention_mask", Tensor::Bool(enc_mask));
        lap(&mut caps, "condition_encoder");

        let frames = latent_frames(request.music.duration);
        let ctx_shape = [batch, frames, 2 * silence.channels];
        let ctx = ArrayD::from_shape_vec(IxDyn(&ctx_shape), silence.context_latents(frames, batch))?;
        caps.arrays.insert("context_latents", Tensor::F32(ctx.clone()));
        let sched = schedule::resolve_schedule(request.shift, request.timesteps.as_deref());
        let t32 = schedule::schedule_f32(&sched);
        caps.arrays.insert("schedule", Tensor::f32(&[t32.len()], t32.clone())?);
        let latent_shape = [batch, frames, noise::LATENT_CHANNELS];
        let mut xt = noise::prepare_noise(&request.seeds, frames)?;
        caps.arrays.insert("noise", Tensor::f32(&latent_shape, xt.clone())?);
        lap(&mut caps, "noise");

        let steps = t32.len();
        let mut xs = Vec::with_capacity(steps * xt.len());
        let mut vs = Vec::with_capacity(steps * xt.len());
        for (i, &ti) in t32.iter().enumerate() {
            xs.extend_from_slice(&xt);
            let x = ArrayD::from_shape_vec(IxDyn(&latent_shape), xt.clone())?;
            let t = ArrayD::from_shape_vec(IxDyn(&[batch]), vec![ti; batch])?;
            let vt = self.dit(&x, &t, &enc, &ctx)?;
            if vt.shape() != latent_shape {
                bail!("dit_decoder.onnx returned vt of shape {:?}, expected {latent_shape:?}", vt.shape());
            }
            let vt: Vec<f32> = vt.iter().copied().collect();
            xt = schedule::ode_update(&xt, &vt, &sched, i);
            vs.extend(vt);
            if let Some(p) = progress.as_mut() {
                p("dit", i + 1, steps);
            }
        }
        let stacked = [steps, batch, frames, noise::LATENT_CHANNELS];
        caps.arrays.insert("xt", Tensor::f32(&stacked, xs)?);
        caps.arrays.insert("vt", Tensor::f32(&stacked, vs)?);
        caps.arrays.insert("pred_latents", Tensor::f32(&latent_shape, xt.clone())?);
        lap(&mut caps, "dit");

        if xt.iter().any(|x| !x.is_finite()) {
            bail!("pred_latents contain NaN/Inf; refusing to decode (upstream raises here too)");
        }
        let (decoded, decoded_shape) = self.tiled_decode(&xt, batch, frames, &mut progress)?;
        audio::check_finite(&decoded, "the VAE decoder (vae_decoder)").map_err(anyhow::Error::msg)?;
        caps.arrays.insert("audio_decoded", Tensor::f32(&decoded_shape, decoded.clone())?);
        lap(&mut caps, "vae");
        let mut out = decoded;
        audio::anti_clip(&mut out, batch);
        audio::normalize_peak(&mut out, batch, audio::NORMALIZATION_DB);
        caps.arrays.insert("audio", Tensor::f32(&decoded_shape, out)?);
        lap(&mut caps, "postprocess");
        Ok(caps)
    }

    /// `tiling.tiled_decode` of `[B, T, C]` latents (transposed to `[B, C, T]` first), item by item, tile by tile;
    /// the chunk from the memory budget (or upstream's 256 with `ACESTEP_VAE_TILING=upstream`).
    pub fn tiled_decode(
        &mut self,
        latents_btc: &[f32],
        batch: usize,
        frames: usize,
        progress: &mut Option<Progress<'_>>,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let c = noise::LATENT_CHANNELS;
        let chunk = crate::vae::chunk_frames(self.manifest.as_ref(), &tiling::VaeChunking::from_env()?)?;
        let tiles = tiling::plan_tiles(frames, chunk, tiling::OVERLAP)?;
        let mut items: Vec<Vec<Vec<f32>>> = Vec::with_capacity(batch); // [item][channel] samples
        for b in 0..batch {
            let item = &latents_btc[b * frames * c..(b + 1) * frames * c];
            let mut channels: Vec<Vec<f32>> = Vec::new();
            for (k, tile) in tiles.iter().enumerate() {
                let width = tile.win_end - tile.win_start;
                let mut window = Vec::with_capacity(c * width);
                for ch in 0..c {
                    for t in tile.win_start..tile.win_end {
                        window.push(item[t * c + ch]);
                    }
                }
                let audio = self.decode_latents(ArrayD::from_shape_vec(IxDyn(&[1, c, width]), window)?)?;
                let shape = audio.shape().to_vec();
                if shape.len() != 3 || shape[0] != 1 {
                    bail!("vae_decoder.onnx returned shape {shape:?}, expected [1, channels, samples]");
                }
                let (start, end) = tiling::trim(tile, shape[2]);
                if start >= end {
                    bail!("vae_decoder.onnx returned {} samples for {width} latent frames; nothing left after trimming the tile overlap", shape[2]);
                }
                if channels.is_empty() {
                    channels = vec![Vec::new(); shape[1]];
                }
                let audio = audio.as_standard_layout();
                let flat = audio.as_slice().ok_or_else(|| anyhow!("vae_decoder.onnx output is not contiguous"))?;
                for (ch, dst) in channels.iter_mut().enumerate() {
                    dst.extend_from_slice(&flat[ch * shape[2] + start..ch * shape[2] + end]);
                }
                if let Some(p) = progress.as_mut() {
                    p("vae", k + 1, tiles.len());
                }
            }
            items.push(channels);
        }
        let n_ch = items[0].len();
        let samples = items[0].first().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(batch * n_ch * samples);
        for item in items {
            for ch in item {
                out.extend(ch);
            }
        }
        Ok((out, vec![batch, n_ch, samples]))
    }

    /// Seconds inside ONNX Runtime per graph (and calls).
    pub fn session_seconds(&self) -> BTreeMap<String, (f64, usize)> {
        self.sessions.run_seconds()
    }
}

/// Right-pad token rows to the batch maximum (upstream `_pad_sequences`) and build the bool mask.
pub fn pad_right(rows: &[Vec<i64>], pad_id: i64) -> Result<(ArrayD<i64>, ArrayD<bool>)> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = vec![pad_id; rows.len() * longest];
    let mut mask = vec![false; rows.len() * longest];
    for (i, row) in rows.iter().enumerate() {
        ids[i * longest..i * longest + row.len()].copy_from_slice(row);
        mask[i * longest..i * longest + row.len()].iter_mut().for_each(|m| *m = true);
    }
    Ok((
        ArrayD::from_shape_vec(IxDyn(&[rows.len(), longest]), ids)?,
        ArrayD::from_shape_vec(IxDyn(&[rows.len(), longest]), mask)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_right_with_a_bool_mask() {
        let (ids, mask) = pad_right(&[vec![5, 6, 7], vec![8]], 0).expect("pad");
        assert_eq!(ids.shape(), &[2, 3]);
        assert_eq!(ids.iter().copied().collect::<Vec<_>>(), vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(mask.iter().copied().collect::<Vec<_>>(), vec![true, true, true, true, false, false]);
    }
}
