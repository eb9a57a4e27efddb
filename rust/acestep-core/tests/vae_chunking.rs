//! The VAE memory-budget planner against Python's (`python -m acestep_parity.rust_vectors` writes the vectors
//! from `runtimes/py_ort/acestep_ort/host/tiling.py`).

use std::path::Path;

use acestep_core::tiling::{self, VaeChunking, VaeShape, VAE_MAX_FRAMES};
use serde_json::Value;

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/vae_chunking.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("list").iter().map(|x| x.as_u64().expect("int") as usize).collect()
}

fn shape(v: &Value) -> VaeShape {
    VaeShape {
        decoder_channels: v["decoder_channels"].as_u64().expect("channels") as usize,
        channel_multiples: usizes(&v["channel_multiples"]),
        downsampling_ratios: usizes(&v["downsampling_ratios"]),
    }
}

#[test]
fn decoder_widths_equal_python() {
    for v in vectors()["shapes"].as_array().expect("shapes") {
        let s = shape(v);
        assert_eq!(s.activation_widths(), usizes(&v["widths"]), "{v}");
        assert_eq!(s.frame_bytes() as u64, v["frame_bytes"].as_u64().expect("bytes"), "{v}");
    }
}

#[test]
fn budget_chunks_equal_python() {
    for v in vectors()["budgets"].as_array().expect("budgets") {
        let get = |k: &str| v[k].as_u64().expect(k) as usize;
        let got = tiling::budget_chunk(get("memory_mb"), get("frame_bytes"), get("max_frames"), get("overlap"));
        match (&got, &v["chunk"]) {
            (Ok(c), Value::Number(want)) => assert_eq!(*c as u64, want.as_u64().expect("chunk"), "{v}"),
            (Err(e), Value::String(msg)) => assert_eq!(&e.to_string(), msg, "{v}"),
            _ => panic!("{v}: got {got:?}"),
        }
    }
}

#[test]
fn settings_parse_as_in_python() {
    let data = vectors();
    let shapes: Vec<VaeShape> = data["shapes"].as_array().expect("shapes").iter().map(shape).collect();
    for v in data["settings"].as_array().expect("settings") {
        let got = VaeChunking::parse(v["tiling"].as_str(), v["memory_mb"].as_str());
        match (&got, &v["result"]) {
            (Ok(c), Value::Object(want)) => {
                let mode = match c {
                    VaeChunking::Upstream => "upstream",
                    VaeChunking::Budget { memory_mb } => {
                        assert_eq!(*memory_mb as u64, want["memory_mb"].as_u64().expect("mb"), "{v}");
                        "budget"
                    }
                };
                assert_eq!(mode, want["mode"].as_str().expect("mode"), "{v}");
                let chunks: Vec<usize> =
                    shapes.iter().map(|s| c.chunk_size(s, VAE_MAX_FRAMES).expect("chunk")).collect();
                assert_eq!(chunks, usizes(&want["chunk"]), "{v}");
            }
            (Err(e), Value::String(msg)) => assert_eq!(&e.to_string(), msg, "{v}"),
            _ => panic!("{v}: got {got:?}"),
        }
    }
}

#[test]
fn budget_plans_equal_python() {
    let data = vectors();
    let tiny = shape(&data["shapes"][1]);
    for v in data["plans"].as_array().expect("plans") {
        let memory_mb = v["memory_mb"].as_u64().expect("mb") as usize;
        let chunk = VaeChunking::Budget { memory_mb }.chunk_size(&tiny, VAE_MAX_FRAMES).expect("chunk");
        assert_eq!(chunk as u64, v["chunk"].as_u64().expect("chunk"), "{v}");
        let frames = v["frames"].as_u64().expect("frames") as usize;
        let tiles: Vec<Vec<usize>> = tiling::plan_tiles(frames, chunk, tiling::OVERLAP)
            .expect("plan")
            .iter()
            .map(|t| vec![t.win_start, t.win_end, t.core_start, t.core_end])
            .collect();
        let want: Vec<Vec<usize>> = v["tiles"].as_array().expect("tiles").iter().map(usizes).collect();
        assert_eq!(tiles, want, "{v}");
    }
}
