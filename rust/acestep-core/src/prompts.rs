//! Prompt strings for the DiT caption and lyric branches: port of `runtimes/py_ort/acestep_ort/host/prompts.py`.

use std::sync::OnceLock;

use regex::Regex;

use crate::pyfmt::py_strip;

pub const DEFAULT_DIT_INSTRUCTION: &str = "Fill the audio semantic mask based on the given conditions:";
pub const DEFAULT_LANGUAGE: &str = "unknown";
pub const TEXT_MAX_TOKENS: usize = 256;
pub const LYRIC_MAX_TOKENS: usize = 2048;

/// Append ':' when missing (upstream `_format_instruction`).
pub fn format_instruction(instruction: &str) -> String {
    if instruction.ends_with(':') {
        instruction.to_string()
    } else {
        format!("{instruction}:")
    }
}

fn caption_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Python's `\s` on str also matches U+001C..U+001F; `(?s)` = re.DOTALL. Python's `$` may also match
    // before a final newline; the captured text is stripped afterwards, so both give the same result.
    RE.get_or_init(|| {
        Regex::new(r"(?s)#[\s\x1c-\x1f]*Caption[\s\x1c-\x1f]*\n(.*?)(?:\n[\s\x1c-\x1f]*#[\s\x1c-\x1f]*Metas|$)")
            .expect("static regex")
    })
}

/// Strip an embedded '# Instruction / # Caption' wrapper, keeping the caption body.
pub fn extract_caption_from_sft_format(caption: &str) -> String {
    if caption.contains("# Instruction") && caption.contains("# Caption") {
        if let Some(m) = caption_regex().captures(caption).and_then(|c| c.get(1)) {
            return py_strip(m.as_str()).to_string();
        }
    }
    caption.to_string()
}

/// The '# Metas' block (bpm falsy -> N/A, blank keyscale / time signature -> N/A, duration as whole seconds,
/// "30 seconds" when unknown).
pub fn metas_string(bpm: Option<i64>, keyscale: &str, timesignature: &str, duration: Option<f64>) -> String {
    let bpm_text = match bpm {
        Some(b) if b != 0 => b.to_string(),
        _ => "N/A".to_string(),
    };
    let key_text = if py_strip(keyscale).is_empty() { "N/A" } else { keyscale };
    let ts_text = if !py_strip(timesignature).is_empty() && timesignature != "N/A" { timesignature } else { "N/A" };
    let dur_text = match duration {
        Some(d) if d > 0.0 => format!("{} seconds", d.trunc() as i64),
        _ => "30 seconds".to_string(),
    };
    format!("- bpm: {bpm_text}\n- timesignature: {ts_text}\n- keyscale: {key_text}\n- duration: {dur_text}\n")
}

/// Text-encoder input: `SFT_GEN_PROMPT` filled with instruction, cleaned caption and metas.
pub fn caption_prompt(caption: &str, metas: &str, instruction: &str) -> String {
    format!(
        "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n",
        format_instruction(instruction),
        extract_caption_from_sft_format(caption),
        metas
    )
}

/// Lyric-branch input (upstream `_format_lyrics`).
pub fn lyric_prompt(lyrics: &str, language: &str) -> String {
    format!("# Languages\n{language}\n\n# Lyric\n{lyrics}<|endoftext|>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_defaults() {
        assert_eq!(
            metas_string(None, " ", "N/A", None),
            "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 30 seconds\n"
        );
        assert!(metas_string(Some(120), "C major", "4", Some(6.9)).ends_with("- duration: 6 seconds\n"));
    }

    #[test]
    fn sft_wrapper_is_stripped() {
        let wrapped = "# Instruction\nx\n\n# Caption\n  my song  \n\n# Metas\n- bpm: 1";
        assert_eq!(extract_caption_from_sft_format(wrapped), "my song");
        assert_eq!(extract_caption_from_sft_format("# Caption only"), "# Caption only");
        // both headings are needed: a caption block alone (or an instruction alone) is the user's text
        let caption_only = "# Caption\nmy song\n# Metas\n- bpm: 1";
        assert_eq!(extract_caption_from_sft_format(caption_only), caption_only);
        let instruction_only = "# Instruction\nx\n# Metas\n";
        assert_eq!(extract_caption_from_sft_format(instruction_only), instruction_only);
        assert_eq!(format_instruction("Do it"), "Do it:");
    }
}
