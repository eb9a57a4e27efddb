//! `generate`: ACE-Step 1.5 text2music on ONNX Runtime, without Python.
//!
//!     generate --case cases/text2music_01.json --onnx-dir DIR --out out.wav [--dump caps.npz]
//!     generate --case cases/simple_mode_01.json ...                   # 5 Hz LM planner, then text2music
//!     generate dit-step --onnx-dir DIR --inputs in.npz --out vt.npz     # one teacher-forced DiT step
//!     generate serve --onnx-dir DIR                                    # DiT steps / LM teacher logits (JSON lines)
//!     generate vae-decode --onnx-dir DIR --inputs in.npz --out audio.npz  # the VAE alone, chunked as in a run
//!     generate tokenize --onnx-dir DIR < [{"text": "...", "max_length": 256}, ...]
//!     generate info                                                    # which libonnxruntime is loaded
//!
//! Errors are one line on stderr (`generate: error: ...`, naming the file and the field) and exit code 2.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use acestep_core::assets;
use acestep_core::case::resolve_case;
use acestep_core::lm_planner;
use acestep_core::tolerances::Tolerances;
use acestep_ort::audio_io;
use acestep_ort::dylib::{self, LoadedRuntime};
use acestep_ort::lm::OrtLm;
use acestep_ort::pipeline::{Engine, Request};
use acestep_ort::sessions::SessionConfig;
use acestep_ort::tensor::{Arrays, NpzFile, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::ArrayD;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "generate", version, about = "ACE-Step 1.5 text2music on ONNX Runtime (no Python)")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Args, Clone)]
struct OrtArgs {
    /// Exported ONNX folder (graphs, manifest.json, tokenizer, silence_latent.npy); default $ACESTEP_ONNX_DIR,
    /// else the newest .cache/artifacts/<checkpoint id>/fp32 (what `make run` exports)
    #[arg(long, env = "ACESTEP_ONNX_DIR")]
    onnx_dir: Option<PathBuf>,
    /// libonnxruntime.so.<version> to load (else $ORT_DYLIB_PATH, beside the binary, the project's .venv)
    #[arg(long)]
    ort_dylib: Option<PathBuf>,
    /// Intra-op threads (0 = ONNX Runtime's default); default $ACESTEP_ORT_THREADS or 0, as the Python runtime
    #[arg(long)]
    threads: Option<usize>,
    /// Graph optimization level: disable, basic, extended, all (the Python runtime's default)
    #[arg(long, default_value = "all")]
    optimization: String,
}

#[derive(Args)]
struct GenerateArgs {
    /// Case JSON file (cases/text2music_01.json) or a case id looked up in --cases-dir
    #[arg(long, required = true)]
    case: Option<String>,
    /// Where case ids are looked up
    #[arg(long, default_value = "cases")]
    cases_dir: PathBuf,
    #[command(flatten)]
    ort: OrtArgs,
    /// Output audio (.wav float32, .flac 16-bit, .mp3 128k); default out/<case id>.<output_format of the case>
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every capture point to this .npz (the names and dtypes of Python's captures)
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Golden store root; a parity summary is printed when <root>/<checkpoint id>/<case>.npz exists
    #[arg(long, default_value = "golden")]
    golden_dir: PathBuf,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
    /// Print the timings as one JSON line at the end (for benchmarks)
    #[arg(long)]
    json: bool,
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

fn session_config(ort: &OrtArgs) -> SessionConfig {
    let mut config = SessionConfig::default();
    if let Some(t) = ort.threads {
        config.intra_op_threads = t;
    }
    config.optimization = ort.optimization.clone();
    config
}

/// `--onnx-dir`, else `$ACESTEP_ONNX_DIR`, else the folder the project's tooling exported last:
/// `<cache>/artifacts/<checkpoint id>/fp32` with `<cache>` = `$ACESTEP_PARITY_CACHE` or `.cache` in the current
/// directory or a parent (what `make run` / pytest leave behind).
fn onnx_dir(ort: &OrtArgs) -> Result<PathBuf> {
    if let Some(dir) = &ort.onnx_dir {
        return Ok(dir.clone());
    }
    let caches: Vec<PathBuf> = match std::env::var_os("ACESTEP_PARITY_CACHE") {
        Some(c) => vec![PathBuf::from(c)],
        None => {
            std::env::current_dir().map(|cwd| cwd.ancestors().map(|d| d.join(".cache")).collect()).unwrap_or_default()
        }
    };
    for cache in caches {
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache.join("artifacts"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("fp32")))
            .filter_map(|d| std::fs::metadata(d.join("manifest.json")).and_then(|m| m.modified()).ok().map(|t| (t, d)))
            .collect();
        found.sort();
        if let Some((_, dir)) = found.pop() {
            eprintln!("using the exported ONNX folder {} (pass --onnx-dir to choose another)", dir.display());
            return Ok(dir);
        }
    }
    bail!(
        "no ONNX folder: pass --onnx-dir DIR or set ACESTEP_ONNX_DIR (export one with `acestep-export --out DIR`, \
         or run `make run`, which exports into .cache/artifacts/<checkpoint id>/fp32)"
    )
}

fn load_runtime(ort: &OrtArgs) -> Result<(LoadedRuntime, ort::environment::Environment)> {
    Ok(dylib::load(ort.ort_dylib.as_deref())?)
}

fn open_engine(ort: &OrtArgs, graphs: Option<&[&str]>) -> Result<Engine> {
    Ok(open_engine_env(ort, graphs)?.0)
}

/// The engine and the ONNX Runtime environment (kept to open the LM graphs later).
fn open_engine_env(ort: &OrtArgs, graphs: Option<&[&str]>) -> Result<(Engine, ort::environment::Environment)> {
    let dir = onnx_dir(ort)?;
    let config = session_config(ort);
    let (runtime, env) = load_runtime(ort)?;
    let engine = Engine::open(&dir, runtime, &env, config, graphs)?;
    Ok((engine, env))
}

fn open_lm(engine: &Engine, env: &ort::environment::Environment) -> Result<OrtLm> {
    OrtLm::open(env, &engine.dir, &engine.config, engine.manifest.as_ref())
}

fn bar_style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix:>4}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed_precise}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>.")
}

fn cmd_generate(args: &GenerateArgs) -> Result<()> {
    let case_arg = args.case.as_deref().ok_or_else(|| anyhow!("--case is required"))?;
    let case = resolve_case(case_arg, &args.cases_dir)?;
    if case.task != "text2music" && case.task != "simple_mode" {
        bail!(
            "{}: task {:?} is not supported by this runtime (text2music, simple_mode)",
            case.path.display(),
            case.task
        );
    }
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let ext =
                if audio_io::SUPPORTED.contains(&case.output_format.as_str()) { &case.output_format } else { "wav" };
            PathBuf::from("out").join(format!("{}.{ext}", case.id))
        }
    };
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !audio_io::SUPPORTED.contains(&ext.as_str()) {
        bail!(
            "--out {}: unsupported audio format {ext:?}; the Rust runtime writes {:?}",
            out.display(),
            audio_io::SUPPORTED
        );
    }
    let start = Instant::now();
    let (mut engine, env) = open_engine_env(&args.ort, None)?;
    let mut lm = if case.task == "simple_mode" { Some(open_lm(&engine, &env)?) } else { None };
    let load_s = start.elapsed().as_secs_f64();
    eprintln!(
        "onnxruntime {} from {} ({}); {}",
        engine.runtime.version,
        engine.runtime.path.display(),
        engine.runtime.source,
        engine.config.describe()
    );

    let gen_start = Instant::now();
    let (request, plan) = match lm.as_mut() {
        Some(lm) => {
            let plan = lm.plan(&case)?;
            let request = Request::from_case(&lm_planner::text2music_case(&case, &plan.sample));
            if !args.quiet {
                eprintln!("planner ({} tokens): {}", plan.tokens.len(), plan.metadata_json);
            }
            (request, Some(plan))
        }
        None => (Request::from_case(&case), None),
    };
    let show = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bars: Vec<(String, ProgressBar)> = Vec::new();
    let mut progress = |stage: &str, done: usize, total: usize| {
        if !show {
            return;
        }
        if !bars.iter().any(|(s, _)| s == stage) {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(bar_style(if stage == "dit" { "steps" } else { "tiles" }));
            bar.set_prefix(stage.to_string());
            bars.push((stage.to_string(), bar));
        }
        if let Some((_, bar)) = bars.iter().find(|(s, _)| s == stage) {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done >= total {
                bar.finish();
            }
        }
    };
    let mut caps = engine.generate(&request, Some(&mut progress))?;
    if let Some(plan) = &plan {
        plan.captures(&mut caps.arrays)?;
        caps.timings.extend(plan.timings.iter().cloned());
    }
    let gen_s = gen_start.elapsed().as_secs_f64();

    let audio = match caps.arrays.get("audio") {
        Some(Tensor::F32(a)) => a.as_standard_layout().to_owned(),
        _ => bail!("internal: no audio capture"),
    };
    let shape = audio.shape().to_vec();
    let flat: Vec<f32> = audio.iter().copied().collect();
    let per_item = shape[1] * shape[2];
    let mut written = Vec::new();
    for b in 0..shape[0] {
        let target = if shape[0] == 1 {
            out.clone()
        } else {
            let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
            out.with_file_name(format!("{stem}_{b}.{ext}"))
        };
        audio_io::save(&target, &flat[b * per_item..(b + 1) * per_item], shape[1], 48_000)?;
        println!("wrote {}", target.display());
        written.push(target);
    }
    if let Some(dump) = &args.dump {
        caps.arrays.write_npz(dump)?;
        println!("wrote captures to {}", dump.display());
    }
    let mut sessions = engine.session_seconds();
    if let Some(lm) = &lm {
        for g in [&lm.prefill, &lm.decode] {
            sessions.insert(g.name.clone(), (g.run_seconds, g.calls));
        }
    }
    let ort_total: f64 = sessions.values().map(|(s, _)| s).sum();
    let stages: Vec<String> = caps.timings.iter().map(|(k, v)| format!("{k} {v:.2}s")).collect();
    println!("timings: load {load_s:.2}s, {}", stages.join(", "));
    let per_graph: Vec<String> = sessions.iter().map(|(g, (s, n))| format!("{g} {s:.3}s/{n}")).collect();
    println!(
        "onnxruntime: {ort_total:.3}s in Session::run ({}); host overhead {:.3}s of {gen_s:.3}s end to end",
        per_graph.join(", "),
        gen_s - ort_total
    );
    parity_summary(&engine, &case, &caps.arrays, &args.golden_dir);
    if args.json {
        let timings: serde_json::Map<String, Value> = caps.timings.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let graphs: serde_json::Map<String, Value> =
            sessions.iter().map(|(g, (s, n))| (g.clone(), json!({"seconds": s, "calls": n}))).collect();
        println!(
            "{}",
            json!({"load_s": load_s, "generate_s": gen_s, "ort_run_s": ort_total, "stages": timings,
                   "graphs": graphs, "outputs": written, "ort_version": engine.runtime.version,
                   "ort_dylib": engine.runtime.path, "peak_rss_mb": peak_rss_mb()})
        );
    }
    Ok(())
}

/// This process's peak resident set (`VmHWM` of /proc/self/status) in MiB; None where the file does not exist.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// max_abs per capture against `<golden>/<checkpoint id>/<case>.npz` when it exists (informational; the
/// gates live in cases/tolerances.json and pytest applies them).
fn parity_summary(engine: &Engine, case: &acestep_core::case::Case, arrays: &Arrays, golden_dir: &Path) {
    let Some(cid) = engine.manifest.as_ref().and_then(|m| m["checkpoint_id"].as_str()) else { return };
    let path = golden_dir.join(cid).join(format!("{}.npz", case.id));
    if !path.is_file() {
        return;
    }
    let stale = std::fs::read_to_string(golden_dir.join(cid).join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|m| m["cases"][&case.id]["case_sha256"].as_str().map(|s| s != case.sha256))
        .unwrap_or(false);
    let mut golden = match NpzFile::open(&path) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("parity summary skipped: {e}");
            return;
        }
    };
    let tolerances = Tolerances::load(Path::new("cases/tolerances.json")).ok();
    println!(
        "parity vs golden {}{}:",
        path.display(),
        if stale { " (STALE: the case file changed since)" } else { "" }
    );
    for name in golden.names().to_vec() {
        let Some(ours) = arrays.get(&name) else { continue };
        if matches!(ours, Tensor::Str(..)) {
            continue;
        }
        let Ok(reference) = golden.any(&name) else { continue };
        if reference.shape() != ours.shape() {
            println!("  {name:24} shape {:?} != golden {:?}", ours.shape(), reference.shape());
            continue;
        }
        let max_abs = ours.to_f64().iter().zip(reference.to_f64()).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
        let gate = tolerances
            .as_ref()
            .and_then(|t| t.gates("py_ort~golden", "fp32", &name, Some(&case.id)).ok())
            .and_then(|g| g.get("max_abs").or_else(|| g.get("mismatches")).map(|g| g.value));
        match gate {
            Some(g) => println!(
                "  {name:24} max_abs {max_abs:.3e}  (py_ort~golden gate {g:e}: {})",
                if max_abs <= g { "ok" } else { "OVER" }
            ),
            None => println!("  {name:24} max_abs {max_abs:.3e}"),
        }
    }
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
    let (mut engine, env) = open_engine_env(ort, Some(&["dit_decoder"]))?;
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
                                lm = Some(open_lm(&engine, &env)?);
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
    let dir = onnx_dir(ort)?;
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
    let (runtime, _env) = load_runtime(ort)?;
    println!("{}", json!({"path": runtime.path, "version": runtime.version, "source": runtime.source}));
    if let Some(dir) = &ort.onnx_dir {
        let missing = assets::missing(dir);
        println!("{}: missing assets {missing:?}", dir.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        None => cmd_generate(&cli.generate),
        Some(Command::DitStep { ort, inputs, out }) => {
            let mut engine = open_engine(ort, Some(&["dit_decoder"]))?;
            dit_step(&mut engine, inputs, out).map(|_| ())
        }
        Some(Command::VaeDecode { ort, inputs, out }) => {
            let mut engine = open_engine(ort, Some(&["vae_decoder"]))?;
            vae_decode(&mut engine, inputs, out)
        }
        Some(Command::Serve { ort }) => cmd_serve(ort),
        Some(Command::Tokenize { ort }) => cmd_tokenize(ort),
        Some(Command::Info { ort }) => cmd_info(ort),
    }
}

fn main() -> ExitCode {
    // A bug must still end with one line and a non-zero code, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("generate: internal error: {info}");
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("generate: error: {e:#}");
            ExitCode::from(2)
        }
        Err(_) => ExitCode::from(101),
    }
}
