"""The synthetic Qwen3-Embedding-0.6B tokenizer: byte-stable, Qwen-shaped, loadable by tokenizers and transformers."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from acestep_parity.synth.tokenizer import (
    ADDED_TOKENS,
    DEFAULT_VOCAB_SIZE,
    ENDOFTEXT,
    IM_END,
    TOKENIZER_FILES,
    build_tokenizer_json,
    special_token_ids,
    write_tokenizer,
)

tokenizers = pytest.importorskip("tokenizers")

# Upstream ACE-Step's two prompt layouts (acestep/constants.py SFT_GEN_PROMPT / LYRIC_GEN_PROMPT), filled in.
TEXT_PROMPT = (
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
    "# Caption\nAn upbeat pop song with bright synths\n\n"
    "# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n<|endoftext|>\n"
)
LYRIC_PROMPT = "# Languages\nen\n\n# Lyric\nhello<|endoftext|>"

SAMPLES = {
    "ascii": "test",
    "caption": "A melancholic piano ballad with soft strings, 90 bpm.",
    "japanese": "こんにちは世界",
    "accented": "café déjà vu",
    "lyric-prompt": LYRIC_PROMPT,
    "text-prompt": TEXT_PROMPT,
    "instrumental": "# Languages\nunknown\n\n# Lyric\n[Instrumental]<|endoftext|>",
    "think": "<think>\n\n</think>\n\nok",
    "whitespace": "  two  spaces\r\n\ttab  ",
    "empty": "",
}


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("qwen3_embedding_tok")
    write_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def raw(tok_dir):
    return tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def ids(tok_dir) -> dict[str, int]:
    return special_token_ids(tok_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def hf(tok_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # a local folder only: never the hub
        pytest.importorskip("transformers")
        from transformers import AutoTokenizer

        yield AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)


# --- (1) byte stability -------------------------------------------------------------------------------


def test_two_builds_are_byte_identical(tmp_path, tok_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    paths_a = write_tokenizer(a)
    paths_b = write_tokenizer(b)
    assert [p.name for p in paths_a] == [p.name for p in paths_b] == list(TOKENIZER_FILES)
    for name in TOKENIZER_FILES:
        assert _sha256(a / name) == _sha256(b / name) == _sha256(tok_dir / name), name


def test_files_are_utf8_json_with_trailing_newline(tok_dir):
    for name in TOKENIZER_FILES:
        text = (tok_dir / name).read_bytes().decode("utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n"), name
        assert "\r" not in text, name
        if name.endswith(".json"):
            json.loads(text)
    assert (tok_dir / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")


def test_tokenizers_reserializes_to_the_same_document(tok_dir, raw):
    """Every field we write is one `tokenizers` understands, with the value we meant (no silent defaults)."""
    ours = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    theirs = json.loads(raw.to_str())
    # The only difference allowed: we write merges Qwen-style as "a b", tokenizers 0.22 writes ["a", "b"].
    ours["model"]["merges"] = [m.split(" ") for m in ours["model"]["merges"]]
    assert list(ours) == list(theirs)
    assert ours == theirs


# --- structure --------------------------------------------------------------------------------------


def test_vocab_size_and_added_token_ids(tok_dir, raw, ids):
    assert raw.get_vocab_size(with_added_tokens=False) == DEFAULT_VOCAB_SIZE
    assert raw.get_vocab_size(with_added_tokens=True) == DEFAULT_VOCAB_SIZE + len(ADDED_TOKENS)
    assert ids == {tok: DEFAULT_VOCAB_SIZE + i for i, (tok, _) in enumerate(ADDED_TOKENS)}
    doc = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"]: t["special"] for t in doc["added_tokens"]}
    assert special == {
        "<|endoftext|>": True,
        "<|im_start|>": True,
        "<|im_end|>": True,
        "<think>": False,
        "</think>": False,
    }
    assert json.loads((tok_dir / "added_tokens.json").read_text(encoding="utf-8")) == ids
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == doc["model"]["vocab"] and sorted(vocab.values()) == list(range(DEFAULT_VOCAB_SIZE))


def test_pipeline_matches_qwen(tok_dir):
    doc = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert doc["normalizer"] == {"type": "NFC"}
    split, byte_level = doc["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["behavior"] == "Isolated" and not split["invert"]
    assert split["pattern"]["Regex"] == (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    )
    assert byte_level == {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": False,
        "use_regex": False,
    }
    assert doc["decoder"]["type"] == "ByteLevel"
    assert doc["post_processor"]["type"] == "TemplateProcessing"
    model = doc["model"]
    assert model["type"] == "BPE" and model["unk_token"] is None and not model["byte_fallback"]
    # GPT-2 / Qwen byte ids: "!" is 0, "Ġ" (space) 220, "Ċ" (newline) 198.
    assert (model["vocab"]["!"], model["vocab"]["Ġ"], model["vocab"]["Ċ"]) == (0, 220, 198)


def test_tokenizer_config(tok_dir, ids):
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert (cfg["eos_token"], cfg["pad_token"], cfg["bos_token"], cfg["unk_token"]) == (
        IM_END,
        ENDOFTEXT,
        None,
        None,
    )
    assert cfg["model_max_length"] == 32768 and cfg["padding_side"] == "right"
    assert cfg["add_bos_token"] is False and cfg["clean_up_tokenization_spaces"] is False
    assert cfg["errors"] == "replace"
    assert {int(k): v["content"] for k, v in cfg["added_tokens_decoder"].items()} == {
        v: k for k, v in ids.items()
    }


def test_special_token_ids_reads_any_tokenizer_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"added_tokens": [{"id": 7, "content": "<x>"}]}), encoding="utf-8")
    assert special_token_ids(path) == {"<x>": 7}


@pytest.mark.parametrize("vocab_size", [600, 4096], ids=["corpus-only-600", "char-fill-4096"])
def test_bigger_vocab_moves_the_added_tokens(vocab_size):
    """600 comes from the corpus alone; 4096 (the "full" preset) also needs the whole-character fill."""
    doc = build_tokenizer_json(vocab_size)
    assert len(doc["model"]["vocab"]) == vocab_size
    assert [t["id"] for t in doc["added_tokens"]] == list(range(vocab_size, vocab_size + 5))
    raw = tokenizers.Tokenizer.from_str(json.dumps(doc))
    for text in ["こんにちは世界 一二三", "Привет мир", "café déjà vu", "안녕하세요"]:
        enc = raw.encode(text)
        assert enc.ids[-1] == vocab_size
        assert raw.decode(enc.ids) == text


def test_vocab_size_limits():
    with pytest.raises(ValueError, match=">= 256"):
        build_tokenizer_json(255)
    with pytest.raises(ValueError, match="too big"):
        build_tokenizer_json(10**6)


# Guards "byte-identical on every machine": a different `tokenizers` pre-tokenizer, Python or corpus shows up
# here.  If you change the corpus or the file layout on purpose, update these.
PINNED_SHA256 = {
    "tokenizer.json": "2f763cec27167dd7dbd34adbd33359eef7b4a77b065fc3158f31a23745cd2ef1",
    "tokenizer_config.json": "c40402f2a750fd81c80db9ba3fd1f7e0f1b70fd631c8d97360228eed8cea40c7",
}


@pytest.mark.parametrize("name", list(PINNED_SHA256))
def test_default_build_matches_pinned_sha256(tok_dir, name):
    assert _sha256(tok_dir / name) == PINNED_SHA256[name]


# --- (2) the <|endoftext|> post-processor -----------------------------------------------------------


def test_encode_appends_endoftext(raw, ids):
    enc = raw.encode("test")
    assert enc.ids[-1] == ids[ENDOFTEXT]
    assert enc.ids.count(ids[ENDOFTEXT]) == 1
    assert raw.encode("test", add_special_tokens=False).ids == enc.ids[:-1]


@pytest.mark.parametrize("prompt", [LYRIC_PROMPT, TEXT_PROMPT], ids=["lyric-prompt", "text-prompt"])
def test_literal_endoftext_is_one_token_plus_the_appended_one(raw, ids, prompt):
    eot = ids[ENDOFTEXT]
    enc = raw.encode(prompt)
    assert enc.ids.count(eot) == 2
    assert enc.tokens.count(ENDOFTEXT) == 2
    if prompt.endswith(ENDOFTEXT):
        assert enc.ids[-2:] == [eot, eot]
    else:  # SFT_GEN_PROMPT: "...<|endoftext|>\n" + appended <|endoftext|>
        assert enc.tokens[-3:] == [ENDOFTEXT, "Ċ", ENDOFTEXT]
    # The literal token is never split into BPE pieces.
    assert not any("endoftext" in tok for tok in enc.tokens if tok != ENDOFTEXT)


def test_pair_template(raw, ids):
    enc = raw.encode("a", "b")
    assert enc.ids[-1] == ids[ENDOFTEXT] and enc.ids.count(ids[ENDOFTEXT]) == 2
    assert enc.type_ids == [0, 0, 1, 1]


# --- (3) round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Walking down the empty street tonight", "こんにちは世界", "café déjà vu", "  x\r\n\ty  "],
    ids=["ascii", "japanese", "accented", "whitespace"],
)
def test_decode_round_trips(raw, text):
    enc = raw.encode(text)
    assert raw.decode(enc.ids, skip_special_tokens=True) == text


def test_nfc_normalization(raw):
    decomposed = "cafe\u0301"  # e + combining acute
    assert raw.encode(decomposed).ids == raw.encode("caf\u00e9").ids


# --- (4) transformers ----------------------------------------------------------------------------------


def test_autotokenizer_loads_fast_qwen2(hf, ids):
    assert type(hf).__name__ == "Qwen2TokenizerFast" and hf.is_fast
    assert hf.pad_token_id == ids[ENDOFTEXT]
    assert hf.eos_token_id == ids[IM_END]
    assert hf.bos_token is None and hf.unk_token is None
    assert len(hf) == DEFAULT_VOCAB_SIZE + len(ADDED_TOKENS)
    assert hf.padding_side == "right"


@pytest.mark.parametrize("text", list(SAMPLES.values()), ids=list(SAMPLES))
def test_autotokenizer_matches_raw_encode(hf, raw, text):
    assert hf(text)["input_ids"] == raw.encode(text).ids


def test_autotokenizer_decode_skips_special(hf):
    text = "café déjà vu こんにちは世界"
    assert hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == text


# --- (5) upstream's call: padding="longest", truncation=True, max_length ---------------------------------


def test_batch_padding_and_truncation(hf, ids):
    eot = ids[ENDOFTEXT]
    batch = ["a fairly long caption with many many words in it", "short", "x<|endoftext|>"]
    out = hf(batch, padding="longest", truncation=True, max_length=8)
    rows, masks = out["input_ids"], out["attention_mask"]
    assert [len(r) for r in rows] == [8, 8, 8]
    # Truncation KEEPS the appended <|endoftext|>: `tokenizers` reserves room for the template's special
    # token, cuts the text to max_length - 1 and then appends it.  (Upstream gets the same: a lyric longer
    # than max_length=2048 loses its literal trailing <|endoftext|> but still ends with the appended one.)
    full = hf(batch[0])["input_ids"]
    assert len(full) > 8
    assert rows[0] == full[:7] + [eot]
    assert masks[0] == [1] * 8
    # Right padding with pad == <|endoftext|>: only the attention mask tells padding from real end tokens.
    short = hf(batch[1])["input_ids"]
    assert rows[1] == short + [eot] * (8 - len(short))
    assert masks[1] == [1] * len(short) + [0] * (8 - len(short))
    assert rows[2][:3] == [hf.convert_tokens_to_ids("x"), eot, eot] and masks[2][:3] == [1, 1, 1]
    assert masks[2][3:] == [0] * 5


def test_single_prompt_as_upstream_calls_it(hf, raw, ids):
    """acestep handler: one prompt per call, padding="longest" (no-op), truncation at 256 / 2048."""
    out = hf(LYRIC_PROMPT, padding="longest", truncation=True, max_length=2048, return_attention_mask=True)
    assert out["input_ids"] == raw.encode(LYRIC_PROMPT).ids
    assert out["input_ids"][-2:] == [ids[ENDOFTEXT]] * 2
    assert all(out["attention_mask"])
