//! `generate`: ACE-Step 1.5 text2music on ONNX Runtime, without Python.
//!
//!     generate --case cases/text2music_01.json --onnx-dir DIR --out out.wav [--dump caps.npz] [--json]
//!     generate --case cases/simple_mode_01.json ...                   # 5 Hz LM planner, then text2music
//!
//! With a golden store (`--golden-dir`) it prints the parity of every capture against the golden one and the gate
//! of `cases/tolerances.json` (found beside the case file or in a folder above it, or `--tolerances FILE`).
//! The test harness's protocol (serve, dit-step, vae-decode, tokenize, info) is the `acestep-harness` binary.
//!
//! Errors are one line on stderr (`generate: error: ...`, naming the file and the field) and exit code 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use acestep_core::case::{resolve_case, Case};
use acestep_core::lm_planner;
use acestep_core::tolerances::Tolerances;
use acestep_ort::audio_io;
use acestep_ort::cli::{self, OrtArgs};
use acestep_ort::pipeline::{Engine, Request};
use acestep_ort::tensor::{Arrays, NpzFile, Tensor};
use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "generate", version, about = "ACE-Step 1.5 text2music on ONNX Runtime (no Python)")]
struct Cli {
    /// Case JSON file (cases/text2music_01.json) or a case id looked up in --cases-dir
    #[arg(long)]
    case: String,
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
    /// The gates the parity summary shows; default the cases/tolerances.json beside the case file or in a
    /// folder above it
    #[arg(long)]
    tolerances: Option<PathBuf>,
    /// No progress bars
    #[arg(long)]
    quiet: bool,
    /// Print the timings as one JSON line at the end (for benchmarks)
    #[arg(long)]
    json: bool,
}

fn bar_style(unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix:>4}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed_precise}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>.")
}

fn cmd_generate(args: &Cli) -> Result<()> {
    let case = resolve_case(&args.case, &args.cases_dir)?;
    // an explicit --tolerances must load; the one found beside the case only informs the summary
    let tolerances = match &args.tolerances {
        Some(path) => Some(Tolerances::load(path).with_context(|| format!("--tolerances {}", path.display()))?),
        None => find_tolerances(&case.path).and_then(|path| Tolerances::load(&path).ok()),
    };
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
    let (mut engine, env) = cli::open_engine_env(&args.ort, None)?;
    let mut lm = if case.task == "simple_mode" { Some(cli::open_lm(&engine, &env)?) } else { None };
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
    // lm_tokens is the planner's token count, carried among the timings (as in the Python host), not seconds
    let stages: Vec<String> = caps
        .timings
        .iter()
        .map(|(k, v)| if k == "lm_tokens" { format!("{k} {v:.0}") } else { format!("{k} {v:.2}s") })
        .collect();
    println!("timings: load {load_s:.2}s, {}", stages.join(", "));
    let per_graph: Vec<String> = sessions.iter().map(|(g, (s, n))| format!("{g} {s:.3}s/{n}")).collect();
    println!(
        "onnxruntime: {ort_total:.3}s in Session::run ({}); host overhead {:.3}s of {gen_s:.3}s end to end",
        per_graph.join(", "),
        gen_s - ort_total
    );
    parity_summary(&engine, &case, &caps.arrays, &args.golden_dir, tolerances.as_ref());
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

/// The repository's `cases/tolerances.json` for a case file: `tolerances.json` beside it, else
/// `<folder>/cases/tolerances.json` of the first folder above it that has one.
fn find_tolerances(case_path: &Path) -> Option<PathBuf> {
    let case_path = std::path::absolute(case_path).ok()?;
    let folder = case_path.parent()?;
    let beside = folder.join("tolerances.json");
    if beside.is_file() {
        return Some(beside);
    }
    folder.ancestors().map(|d| d.join("cases").join("tolerances.json")).find(|p| p.is_file())
}

/// max_abs per capture against `<golden>/<checkpoint id>/<case>.npz` when it exists (informational; the
/// gates live in cases/tolerances.json and pytest applies them).
fn parity_summary(engine: &Engine, case: &Case, arrays: &Arrays, golden_dir: &Path, tolerances: Option<&Tolerances>) {
    // this binary is the Rust runtime: its captures against the golden are the pair rust~golden
    const PAIR: &str = "rust~golden";
    let Some(cid) = engine.manifest.as_ref().and_then(|m| m["checkpoint_id"].as_str()) else { return };
    // a derived folder's manifest names its profile (exporters/profiles/derive.py); the fp32 export's names none
    let profile = engine.manifest.as_ref().and_then(|m| m["profile"].as_str()).unwrap_or("fp32");
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
    println!(
        "parity vs golden {}{}{}:",
        path.display(),
        if stale { " (STALE: the case file changed since)" } else { "" },
        if profile == "fp32" {
            String::new()
        } else {
            format!(
                " (profile {profile}: a gate where it has a max_abs one; its lossy gates are \
                     cosine / SNR, which `pytest --backend rust --profile {profile}` checks)"
            )
        }
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
            .and_then(|t| t.gates(PAIR, profile, &name, Some(&case.id)).ok())
            .and_then(|g| g.get("max_abs").or_else(|| g.get("mismatches")).map(|g| g.value));
        match gate {
            Some(g) => println!(
                "  {name:24} max_abs {max_abs:.3e}  ({PAIR} {profile} gate {g:e}: {})",
                if max_abs <= g { "ok" } else { "OVER" }
            ),
            None => println!("  {name:24} max_abs {max_abs:.3e}"),
        }
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    acestep_ort::cli::main_with("generate", || cmd_generate(&args))
}

#[cfg(test)]
mod tests {
    use super::find_tolerances;

    #[test]
    fn tolerances_are_found_from_the_case_not_the_working_directory() {
        let root = std::env::temp_dir().join(format!("acestep-tolerances-{}", std::process::id()));
        let cases = root.join("cases");
        std::fs::create_dir_all(cases.join("more")).expect("mkdir");
        std::fs::write(cases.join("tolerances.json"), "{}").expect("write");
        let want = Some(std::path::absolute(cases.join("tolerances.json")).expect("absolute"));
        assert_eq!(find_tolerances(&cases.join("a.json")), want, "beside the case");
        assert_eq!(find_tolerances(&cases.join("more").join("b.json")), want, "in a folder above");
        assert_eq!(find_tolerances(&root.join("elsewhere").join("c.json")), want, "<parent>/cases/tolerances.json");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
