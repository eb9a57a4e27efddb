//! Fixtures for the crate's own tests, the robustness run and the fuzz targets: a tiny word-level
//! `tokenizer.json` and a `[1, 64, 16]` `silence_latent.npy` in a folder, so a context can be created
//! without an exported model. Not part of the C ABI.

use std::path::{Path, PathBuf};

const TOKENIZER: &str = r##"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":0,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"<|endoftext|>":0,"[UNK]":1,"#":2,"Instruction":3,"Caption":4,"Metas":5,"Lyric":6,"a":7},"unk_token":"[UNK]"}}"##;

/// Write the fixture files into `dir` (created if needed) and return the folder.
pub fn write_fixture(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER)?;
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"pad_token": "<|endoftext|>"}"#)?;
    let (channels, frames) = (64usize, 16usize);
    let data: Vec<f32> = (0..channels * frames).map(|i| (i as f32 * 0.37).sin()).collect();
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (1, {channels}, {frames}), }}");
    std::fs::write(dir.join("silence_latent.npy"), acestep_core::assets::npy_bytes(&header, &data))?;
    Ok(dir.to_path_buf())
}

/// A case JSON for the fixture (valid as a `cases/*.json` file).
pub fn case_json(seed: u64, duration: f64, shift: f64) -> String {
    format!(
        r#"{{"id": "fuzz", "task": "text2music", "caption": "a a a", "lyrics": "a", "duration": {duration:?}, "seeds": [{seed}], "shift": {shift:?}}}"#
    )
}
