//! `acestep-harness`: the test harness's protocol on the Rust runtime (what `acestep_parity.backends.rust` and the
//! tests drive); the user CLI is `generate`.
//!
//!     acestep-harness serve --onnx-dir DIR                                    # DiT steps / LM teacher logits (JSON lines)
//!     acestep-harness dit-step --onnx-dir DIR --inputs in.npz --out vt.npz     # one teacher-forced DiT step
//!     acestep-harness vae-decode --onnx-dir DIR --inputs in.npz --out audio.npz  # the VAE alone, chunked as in a run
//!     acestep-harness tokenize --onnx-dir DIR < [{"text": "...", "max_length": 256}, ...]
//!     acestep-harness info                                                    # which libonnxruntime is loaded
//!
//! Errors are one line on stderr (`acestep-harness: error: ...`) and exit code 2.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use acestep_core::assets;
use acestep_ort::cli::{self, OrtArgs};
use acestep_ort::lm::OrtLm;
use acestep_ort::pipeline::Engine;
use acestep_ort::tensor::{Arrays, NpzFile, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use ndarray::ArrayD;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "acestep-harness", version, about = "The test harness's protocol on the Rust ONNX Runtime runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One teacher-forced DiT step: hidden_states, timestep, encoder_hidden_states, context_latents from an .npz
    DitStep {
        #[command(flatten)]
        ort: OrtArgs,
        /// .npz with hidden_states [B,T,64], timestep [B], encoder_hidden_states [B,T_enc,H], context_latents [B,T,128]
        #[arg(long)]
        inputs: PathBuf,
        /// .npz to write with vt [B,T,64]
        #[arg(long)]
        out: PathBuf,
    },
    /// The VAE alone: pred_latents [B,T,64] from an .npz -> audio_decoded [B,2,1920*T], chunked as a run does
    /// ($ACESTEP_VAE_TILING, $ACESTEP_VAE_MEMORY_MB)
    VaeDecode {
        #[command(flatten)]
        ort: OrtArgs,
        /// .npz with pred_latents [B,T,64]
        #[arg(long)]
        inputs: PathBuf,
        /// .npz to write with audio_decoded [B,2,1920*T]
        #[arg(long)]
        out: PathBuf,
    },
    /// Long-lived DiT steps: one JSON object per stdin line {"inputs": IN, "out": OUT}, one reply line each ({"ok": true, "dit_seconds": S})
    Serve {
        #[command(flatten)]
        ort: OrtArgs,
    },
    /// Token ids of texts: stdin JSON [{"text": ..., "max_length": N}, ...] -> stdout JSON [[ids], ...]
    Tokenize {
        #[command(flatten)]
        ort: OrtArgs,
    },
    /// Which ONNX Runtime library is found and its version
    Info {
        #[command(flatten)]
        ort: OrtArgs,
    },
}

/// One DiT step from an .npz to an .npz; returns the seconds of the DiT call alone (no file I/O).
fn dit_step(engine: &mut Engine, inputs: &Path, out: &Path) -> Result<f64> {
    let mut npz = NpzFile::open(inputs)?;
    let xt = npz.f32("hidden_states")?;
    let t = npz.f32("timestep")?;
    let enc = npz.f32("encoder_hidden_states")?;
    let ctx = npz.f32("context_latents")?;
    let start = std::time::Instant::now();
    let vt: ArrayD<f32> = engine.dit(&xt, &t, &enc, &ctx)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut arrays = Arrays::default();
    arrays.insert("vt", Tensor::F32(vt));
    arrays.write_npz(out)?;
    Ok(seconds)
}

/// Teacher-forced LM logits (`lm_teacher_logits`): `{"lm_teacher": {"prompt_ids": [...], "tokens": [...]},
/// "out": OUT}` -> OUT.npz with `logits` [steps, V].
fn lm_teacher(lm: &mut OrtLm, req: &Value, out: &Path) -> Result<()> {
    let ids = |key: &str| -> Result<Vec<u32>> {
        req[key]
            .as_array()
            .ok_or_else(|| anyhow!("lm_teacher.{key} must be a list of token ids"))?
            .iter()
            .map(|v| v.as_u64().map(|i| i as u32).ok_or_else(|| anyhow!("lm_teacher.{key}: {v} is not a token id")))
            .collect()
    };
    let (prompt, tokens) = (ids("prompt_ids")?, ids("tokens")?);
    if prompt.is_empty() || tokens.is_empty() {
        bail!("lm_teacher needs a non-empty prompt and token stream");
    }
    let logits = lm.teacher_forced(&prompt, &tokens)?;
    let vocab = logits.len() / tokens.len();
    let mut arrays = Arrays::default();
    arrays.insert("logits", Tensor::f32(&[tokens.len(), vocab], logits)?);
    arrays.write_npz(out)?;
    Ok(())
}

fn vae_decode(engine: &mut Engine, inputs: &Path, out: &Path) -> Result<()> {
    let latents = NpzFile::open(inputs)?.f32("pred_latents")?;
    let shape = latents.shape().to_vec();
    if shape.len() != 3 || shape[2] != acestep_core::noise::LATENT_CHANNELS {
        bail!("{}: pred_latents must be [B, T, 64], got {shape:?}", inputs.display());
    }
    let flat: Vec<f32> = latents.iter().copied().collect();
    let (audio, audio_shape) = engine.tiled_decode(&flat, shape[0], shape[1], &mut None)?;
    let mut arrays = Arrays::default();
    arrays.insert("audio_decoded", Tensor::f32(&audio_shape, audio)?);
    arrays.write_npz(out)?;
    Ok(())
}

fn cmd_serve(ort: &OrtArgs) -> Result<()> {
    let (mut engine, env) = cli::open_engine_env(ort, Some(&["dit_decoder"]))?;
    let mut lm: Option<OrtLm> = None;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", json!({"ready": true, "ort_version": engine.runtime.version}))?;
    stdout.flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => {
                let (inputs, out) = (req["inputs"].as_str(), req["out"].as_str());
                let teacher = req.get("lm_teacher");
                match (inputs, out) {
                    (_, Some(o)) if teacher.is_some() => {
                        let result = (|| -> Result<()> {
                            if lm.is_none() {
                                lm = Some(cli::open_lm(&engine, &env)?);
                            }
                            let lm = lm.as_mut().ok_or_else(|| anyhow!("LM not opened"))?;
                            lm_teacher(lm, teacher.unwrap_or(&Value::Null), Path::new(o))
                        })();
                        match result {
                            Ok(()) => json!({"ok": true}),
                            Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                        }
                    }
                    (Some(i), Some(o)) => match dit_step(&mut engine, Path::new(i), Path::new(o)) {
                        Ok(seconds) => json!({"ok": true, "dit_seconds": seconds}),
                        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
                    },
                    _ => json!({"ok": false, "error": "each line needs \"inputs\" and \"out\""}),
                }
            }
            Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

fn cmd_tokenize(ort: &OrtArgs) -> Result<()> {
    let dir = cli::onnx_dir(ort)?;
    let (tokenizer_json, tokenizer_config) = assets::tokenizer_paths(&dir);
    let mut tokenizer = acestep_ort::tokenizer::TextTokenizer::load(&tokenizer_json, Some(&tokenizer_config))?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
    let items: Value = serde_json::from_str(&text).context("stdin: not JSON")?;
    let items = items.as_array().ok_or_else(|| anyhow!("stdin: expected a JSON list"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let t = item["text"].as_str().ok_or_else(|| anyhow!("stdin[{i}]: field 'text' must be a string"))?;
        let n = item["max_length"].as_u64().ok_or_else(|| anyhow!("stdin[{i}]: field 'max_length' must be an int"))?;
        out.push(tokenizer.encode(t, n as usize)?);
    }
    println!("{}", json!({"pad_id": tokenizer.pad_id, "ids": out}));
    Ok(())
}

fn cmd_info(ort: &OrtArgs) -> Result<()> {
    let (runtime, _env) = cli::load_runtime(ort)?;
    println!("{}", json!({"path": runtime.path, "version": runtime.version, "source": runtime.source}));
    if let Some(dir) = &ort.onnx_dir {
        let missing = assets::missing(dir);
        println!("{}: missing assets {missing:?}", dir.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::DitStep { ort, inputs, out } => {
            let mut engine = cli::open_engine(ort, Some(&["dit_decoder"]))?;
            dit_step(&mut engine, inputs, out).map(|_| ())
        }
        Command::VaeDecode { ort, inputs, out } => {
            let mut engine = cli::open_engine(ort, Some(&["vae_decoder"]))?;
            vae_decode(&mut engine, inputs, out)
        }
        Command::Serve { ort } => cmd_serve(ort),
        Command::Tokenize { ort } => cmd_tokenize(ort),
        Command::Info { ort } => cmd_info(ort),
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::main_with("acestep-harness", || run(args))
}
