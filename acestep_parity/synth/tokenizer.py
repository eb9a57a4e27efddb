"""A small, deterministic stand-in for the tokenizer files of ACE-Step 1.5's ``Qwen3-Embedding-0.6B/`` folder.

No real weights or vocabularies can be downloaded here, so :func:`write_tokenizer` builds a byte-level BPE
tokenizer that has the *structure* of the real Qwen3-Embedding-0.6B tokenizer and writes it with the same
file names:

* ``tokenizer.json`` (what ``tokenizers`` / ``transformers`` fast tokenizers load):

  - normalizer ``NFC``;
  - pre-tokenizer ``Sequence[Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space=False, use_regex=False)]``;
  - model ``BPE`` over the 256 byte symbols (GPT-2 ``bytes_to_unicode`` order, as in Qwen's vocab, so every
    string is encodable and there is no unk token) plus merges learnt from a fixed in-code corpus;
  - added tokens after the BPE vocab, consecutive ids: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``
    (special) then ``<think>``, ``</think>`` (not special, as in Qwen3);
  - post-processor ``TemplateProcessing`` (``$A <|endoftext|>`` / ``$A <|endoftext|> $B <|endoftext|>``):
    Qwen3-Embedding's tokenizer.json got such a template after release (llama.cpp PR #14314 reads the eos
    from it) so that every encoded sequence ends with ``<|endoftext|>``.  We write the bare template, not
    ``Sequence[ByteLevel, TemplateProcessing]``: Qwen2's ``ByteLevel`` post-processor has
    ``trim_offsets=False`` and then does nothing at all (ids and offsets are unchanged), so either form
    gives identical encodings;
  - decoder ``ByteLevel``.

* ``tokenizer_config.json`` (``Qwen2Tokenizer``, eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos/unk,
  ``model_max_length`` 32768, ``padding_side`` ``right``: upstream ACE-Step tokenizes one prompt per call
  with ``padding="longest"`` -- a no-op for one sequence -- and right-pads the batch itself with
  ``pad_token_id``; diffusers' ACE-Step pipeline tokenizes the whole batch with ``padding="longest"`` and so
  uses this setting, which then agrees with upstream's handler);
* ``special_tokens_map.json``, ``added_tokens.json``, ``vocab.json`` and ``merges.txt`` like the real folder
  (``chat_template.jinja`` is not written: nothing in ACE-Step's text-encoder path uses it).

Training does not use ``tokenizers``' trainer: it is a plain-Python BPE (see :func:`train_bpe`; most frequent
pair first, ties broken by the smaller ``(left id, right id)``) over words pre-tokenized by ``tokenizers``' own
pre-tokenizer, topped up with whole-character tokens (accented Latin, Greek, Cyrillic, kana, CJK, Hangul) when
the corpus cannot supply ``vocab_size`` tokens (the built-in corpus gives 1930 tokens; at most 35015 can be
built).  Every file is serialized with ``json`` (``ensure_ascii=False``, indent 2, trailing newline), so the
output is byte-identical on every run and machine for a given ``vocab_size``.

With the default ``vocab_size=512`` the BPE vocab has ids 0..511 and the added tokens get 512..516, so
``len(tokenizer) == 517``; in general the first added token's id is ``vocab_size``.
"""

from __future__ import annotations

import json
import pathlib
import unicodedata
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

DEFAULT_VOCAB_SIZE = 512
MODEL_MAX_LENGTH = 32768

# The pre-tokenizer pattern of Qwen2 / Qwen2.5 / Qwen3 tokenizer.json (note: single digits, ``\p{N}``).
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK = "<think>"
END_THINK = "</think>"

# (content, special) in id order; ids start at ``vocab_size``.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    (THINK, False),
    (END_THINK, False),
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


# --------------------------------------------------------------------------------------------------------
# Training corpus: fixed, in code.  Keep every string NFC-composed (checked in `_corpus`).
# --------------------------------------------------------------------------------------------------------

_CAPTIONS = (
    "An upbeat pop song with bright synths, punchy drums and a catchy female vocal hook.",
    "A melancholic piano ballad with soft strings and a breathy male vocal.",
    "Energetic rock track driven by distorted electric guitars, bass and live drums.",
    "Chill lo-fi hip hop beat with vinyl crackle, jazzy keys and a laid-back groove.",
    "Epic orchestral soundtrack with booming percussion, brass fanfares and a choir.",
    "Smooth jazz ballad featuring saxophone, upright bass and brushed drums.",
    "Dark techno with a pounding kick drum, acid bassline and hypnotic hi-hats.",
    "Acoustic folk song with fingerpicked guitar, harmonica and warm harmonies.",
    "Dreamy synthwave with retro arpeggios, gated reverb drums and a nostalgic mood.",
    "Aggressive trap beat with rolling hi-hats, deep 808 bass and dark pads.",
    "Funky disco groove with slap bass, wah guitar, strings and a four on the floor beat.",
    "Ambient soundscape with evolving pads, field recordings and gentle piano notes.",
    "Country song with twangy electric guitar, pedal steel, fiddle and a storytelling vocal.",
    "Heavy metal anthem with double kick drums, shredding guitar solos and powerful vocals.",
    "Reggae track with offbeat guitar skanks, a deep bassline and relaxed vocals.",
    "Classical string quartet piece, slow and elegant, in a minor key.",
    "Latin pop with reggaeton rhythm, nylon guitar, brass stabs and a duet vocal.",
    "Emotional R&B slow jam with lush chords, finger snaps and silky vocals.",
    "Fast drum and bass with chopped breakbeats, a rolling sub bass and atmospheric pads.",
    "Cinematic trailer music with rising tension, taiko drums and a huge final hit.",
    "Happy ukulele tune with whistling, handclaps and a sunny summer feeling.",
    "Gospel choir singing over organ, piano and a driving rhythm section.",
    "Bossa nova with soft nylon guitar, light percussion and a gentle female voice.",
    "Indie rock with jangly guitars, a melodic bassline and heartfelt vocals.",
    "Deep house track with a warm bass, soulful vocal chops and shuffled percussion.",
    "Blues shuffle with a crying slide guitar, harmonica and a gritty male voice.",
    "J-pop anime opening with fast drums, bright guitars and an energetic female vocal.",
    "Minimal piano solo, quiet and introspective, with lots of space between notes.",
    "Epic power ballad with a soaring chorus, big drums and layered backing vocals.",
    "Chiptune melody with square wave leads, noise percussion and an 8-bit bassline.",
    "Flamenco guitar with rhythmic hand claps, cajon and a passionate vocal.",
    "Celtic folk tune with tin whistle, fiddle, bodhran and acoustic guitar.",
    "Trance anthem with a supersaw lead, big build-ups and an euphoric drop.",
    "Lullaby with music box, soft humming and a slow, calm tempo.",
    "Punk rock song, fast and loud, with shouted vocals and power chords.",
    "K-pop dance track with a heavy synth bass, crisp claps and catchy rap verses.",
    "Soulful neo-soul groove with Rhodes piano, live bass and a relaxed vocal.",
    "Instrumental post-rock with delayed guitars slowly building to a loud climax.",
    "Baroque harpsichord piece with a walking bassline and ornamented melody.",
    "Dubstep track with wobble bass, heavy half-time drums and a dark atmosphere.",
    "Tropical house with marimba plucks, steel drums and a light vocal hook.",
    "Sad indie folk with a whispered vocal, banjo and a distant piano.",
    "Hard rock riff with crunchy guitars, cowbell and a raspy male vocal.",
    "Video game boss battle music with fast strings, choir and pounding drums.",
    "Soft acoustic cover with a warm female vocal and a single guitar.",
    "Afrobeat groove with polyrhythmic percussion, horns and a call and response vocal.",
    "Synth pop with a bouncy bassline, vocoder vocals and sparkling arpeggios.",
    "Orchestral waltz in three four time with sweeping strings and woodwinds.",
    "Meditation music with singing bowls, drones and slow breathing pads.",
    "Garage rock with fuzzy guitars, tambourine and a raw live recording sound.",
    "Piano and cello duet, romantic and slow, recorded in a small hall.",
    "Boom bap hip hop with dusty drums, a jazzy sample and confident rap vocals.",
    "Psychedelic rock with swirling organ, phaser guitars and dreamy vocals.",
    "Drill beat with sliding 808s, dark piano and aggressive rap flow.",
    "Sea shanty sung by a group of men with stomps and an accordion.",
    "Chamber pop with glockenspiel, strings and a whimsical vocal melody.",
    "Industrial track with metallic percussion, distorted synths and shouted vocals.",
    "Mellow city pop with groovy bass, electric piano and a nostalgic female vocal.",
    "Epic folk metal with bagpipes, fast guitars and a battle choir.",
    "Smooth instrumental guitar with light drums and warm analog synth pads.",
)

_LYRICS = (
    "[verse]",
    "[chorus]",
    "[bridge]",
    "[intro]",
    "[outro]",
    "[pre-chorus]",
    "[Instrumental]",
    "[verse 1]",
    "[verse 2]",
    "Walking down the empty street tonight",
    "Under the silver moon we start to fly",
    "I can feel your heartbeat in the rain",
    "Every little thing is gonna be alright",
    "Hold me closer, never let me go",
    "We were young and we were running free",
    "The city lights are calling out my name",
    "Dancing in the kitchen at midnight",
    "Don't you know that I'm still waiting here",
    "All the stars are falling from the sky",
    "Take my hand and we'll be on our way",
    "I'll be there when the morning comes",
    "You're the fire burning in my soul",
    "Sing it louder, let the whole world hear",
    "Oh oh oh, yeah yeah yeah",
    "La la la, na na na",
    "We'll keep on dancing till the sun goes down",
    "Broken hearts and open roads",
    "Summer nights and ocean breeze",
    "I've been dreaming of a better day",
    "She said she'd never leave this town",
    "They're singing songs we used to know",
    "Turn it up, turn it up, turn it up",
    "Nothing's gonna stop us now",
    "Running through the fields of gold",
    "In the silence I can hear you call",
    "Baby, baby, won't you stay tonight",
    "Light it up and watch it glow",
    "Time keeps moving, we keep losing",
    "Can't you see the colors in the sky",
    "Home is where the heart is, where you are",
    "We rise, we fall, we stand up tall",
    "Another day, another dollar, another song",
    "My guitar is crying out your name",
    "Lost in the music, lost in the night",
    "Hey, hey, come on and sing with me",
    "Remember when we used to laugh all day",
    "The river flows and so do I",
    "Whisper softly, don't wake the town",
    "Feel the rhythm in your bones",
    "One, two, three, four, let's go",
    "Shadows dancing on the wall",
    "I'm never gonna give this up",
    "Carry me home across the sea",
    "Thunder rolling, hearts are racing",
    "Golden hour, golden light",
    "Wake me up when it's all over",
    "Love will find a way back home",
    "Ooh, ooh, ooh",
    "Yeah, yeah, yeah, yeah",
)

_JAPANESE = (
    "こんにちは世界",
    "夜空に輝く星のように",
    "君と一緒に歌いたい",
    "明日はきっと晴れるだろう",
    "さくらの花が舞い散る季節",
    "心の中で響くメロディー",
    "走り出せ、夢に向かって",
    "ありがとう、さようなら",
    "静かな夜に雨が降る",
    "僕らの未来は輝いている",
    "風の音を聞いて",
    "愛してる、ずっと",
    "東京の街を歩いて",
    "涙が止まらない",
    "元気なポップソング、明るいシンセと女性ボーカル",
    "切ないピアノバラード",
    "ロック、ギター、ドラム、ベース",
    "海の向こうへ行こう",
    "笑顔を忘れないで",
    "光の中へ",
)

_ACCENTED = (
    "café déjà vu",
    "Je t'aime à la folie, mon cœur est à toi",
    "La vie en rose, l'été éternel",
    "Où es-tu ce soir, ma chérie?",
    "Corazón, baila conmigo esta noche",
    "Canción de amor bajo la luna",
    "¿Dónde estás? Te extraño mañana y siempre",
    "Niño, la música está en tu alma",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein",
    "Schöne Grüße aus München, Straße und Mädchen",
    "Saudade, coração, canção do mar",
    "Não há nada como a nossa música",
    "Ça va très bien, merci beaucoup",
    "Noël, fête, crème brûlée et naïveté",
    "Señorita, el ritmo y la pasión",
    "Fröhliche Musik für die ganze Nacht",
    "Ålborg, Øresund, smørrebrød",
    "Zażółć gęślą jaźń",
    "Dvořák, Janáček, Smetana",
    "piñata, jalapeño, acción",
)

_INSTRUCTIONS = (
    "Fill the audio semantic mask based on the given conditions:",
    "Repaint the mask area based on the given conditions:",
    "Generate audio semantic tokens based on the given conditions:",
    "Extract the VOCALS track from the audio:",
    "Generate the DRUMS track based on the audio context:",
    "Complete the input track:",
)

_SCAFFOLD = (
    "# Instruction\n",
    "# Caption\n",
    "# Metas\n",
    "- bpm: ",
    "- timesignature: ",
    "- keyscale: ",
    "- duration: ",
    "# Languages\n",
    "# Lyric\n",
    "seconds",
    "N/A",
    "[verse]",
    "[chorus]",
    "[Instrumental]",
)

_KEYSCALES = (
    "C major",
    "A minor",
    "G major",
    "E minor",
    "F# minor",
    "B♭ major",
    "D major",
    "C# minor",
    "N/A",
)
_TIMESIGS = ("4", "3", "6", "2", "N/A")
_LANGUAGES = ("en", "ja", "fr", "es", "de", "pt", "zh", "ko", "unknown")


def _metas(i: int) -> str:
    bpm = "N/A" if i % 7 == 6 else str(60 + (i * 37) % 121)
    duration = 10 + (i * 53) % 231
    return (
        f"- bpm: {bpm}\n"
        f"- timesignature: {_TIMESIGS[i % len(_TIMESIGS)]}\n"
        f"- keyscale: {_KEYSCALES[i % len(_KEYSCALES)]}\n"
        f"- duration: {duration} seconds\n"
    )


def _corpus() -> list[str]:
    """The fixed training documents (a few hundred), in a fixed order."""
    docs: list[str] = []
    docs += _SCAFFOLD
    docs += _CAPTIONS
    docs += _LYRICS
    docs += _JAPANESE
    docs += _ACCENTED
    docs += _INSTRUCTIONS
    # Full text-branch prompts in upstream's SFT_GEN_PROMPT layout (without its `<|endoftext|>`, which is an
    # added token and never reaches the BPE model).
    for i, caption in enumerate(_CAPTIONS):
        instruction = _INSTRUCTIONS[i % len(_INSTRUCTIONS)]
        docs.append(f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{_metas(i)}\n")
    # Lyric-branch prompts in upstream's LYRIC_GEN_PROMPT layout.
    verses = _LYRICS[9:]
    for i in range(40):
        lines = [verses[(i * 3 + k) % len(verses)] for k in range(4)]
        if i % 5 == 4:
            lyric = "[Instrumental]"
            lang = "unknown"
        elif i % 4 == 3:
            lyric = "[verse]\n" + "\n".join(_JAPANESE[(i + k) % len(_JAPANESE)] for k in range(3))
            lang = "ja"
        elif i % 4 == 2:
            lyric = "[chorus]\n" + "\n".join(_ACCENTED[(i + k) % len(_ACCENTED)] for k in range(3))
            lang = _LANGUAGES[2 + i % 4]
        else:
            lyric = "[verse]\n" + "\n".join(lines[:2]) + "\n\n[chorus]\n" + "\n".join(lines[2:])
            lang = "en"
        docs.append(f"# Languages\n{lang}\n\n# Lyric\n{lyric}")
    for doc in docs:
        if unicodedata.normalize("NFC", doc) != doc:
            raise AssertionError(f"corpus entry is not NFC: {doc!r}")
        if any(tok in doc for tok, _ in ADDED_TOKENS):
            raise AssertionError(f"corpus entry contains an added token: {doc!r}")
    return docs


# --------------------------------------------------------------------------------------------------------
# BPE training
# --------------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (Qwen uses the same); insertion order = id order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _pre_tokenizer_json() -> dict[str, Any]:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": QWEN2_SPLIT_REGEX},
                "behavior": "Isolated",
                "invert": False,
            },
            dict(_BYTE_LEVEL),
        ],
    }


def _words(docs: list[str]) -> list[tuple[str, int]]:
    """Byte-level pre-tokens of the corpus with their counts, sorted (so the order is machine-independent)."""
    pre_tok = _load_pre_tokenizer()
    counts: Counter[str] = Counter()
    for doc in docs:
        for piece, _ in pre_tok.pre_tokenize_str(unicodedata.normalize("NFC", doc)):
            counts[piece] += 1
    return sorted(counts.items())


def _load_pre_tokenizer():
    """The same pre-tokenizer as ``_pre_tokenizer_json()`` describes, as a ``tokenizers`` object."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


# Phase-2 fill: whole-character tokens, in this fixed order, for vocab sizes the corpus cannot support.  Only
# explicit code point ranges (no `unicodedata` lookups, whose answers depend on the Python version).
_FILL_RANGES = (
    (0x00C0, 0x00D6),  # Latin-1 letters (skipping U+00D7 multiplication sign)
    (0x00D8, 0x00F6),  # (skipping U+00F7 division sign)
    (0x00F8, 0x00FF),
    (0x0100, 0x017F),  # Latin Extended-A
    (0x0391, 0x03A1),  # Greek capitals (U+03A2 is unassigned)
    (0x03A3, 0x03A9),
    (0x03B1, 0x03C9),  # Greek small
    (0x0410, 0x044F),  # Cyrillic
    (0x3041, 0x3096),  # Hiragana
    (0x30A1, 0x30FA),  # Katakana
    (0x30FC, 0x30FC),  # Katakana prolonged sound mark
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7A3),  # Hangul syllables
)

MIN_FREQUENCY = 2


def _fill_chars():
    for lo, hi in _FILL_RANGES:
        for cp in range(lo, hi + 1):
            yield chr(cp)


def _segment(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE-encode one word: repeatedly merge the adjacent pair of lowest rank (leftmost on ties)."""
    syms = list(symbols)
    while len(syms) > 1:
        ranked = [(ranks[pair], i) for i, pair in enumerate(pairwise(syms)) if pair in ranks]
        if not ranked:
            break
        _, i = min(ranked)
        syms[i : i + 2] = [syms[i] + syms[i + 1]]
    return syms


def train_bpe(
    docs: list[str], vocab_size: int, min_frequency: int = MIN_FREQUENCY
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a byte-level BPE vocab of exactly ``vocab_size`` tokens.

    Returns ``(vocab, merges)``: ``vocab`` maps token -> id (the 256 byte symbols first, in GPT-2 order, then
    new tokens in the order they were created); ``merges`` is in rank order.

    Phase 1 is classic BPE on ``docs``: the most frequent adjacent pair wins, ties go to the smaller
    ``(id(left), id(right))``; it stops at ``vocab_size`` or when the best pair occurs fewer than
    ``min_frequency`` times.  (The built-in corpus yields well over 512 tokens in phase 1.)  Phase 2, only
    for larger vocabs, adds whole-character tokens for the code points of ``_FILL_RANGES`` in order (accented
    Latin, Greek, Cyrillic, kana, CJK, Hangul -- real Qwen vocabularies hold all of these as tokens), each
    built with the merges needed on top of how the current merges segment it.  Raises ``ValueError`` if
    even that cannot reach ``vocab_size``.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be >= 256 (the byte alphabet), got {vocab_size}")
    byte_map = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for ch in byte_map.values():
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []

    def add_merge(pair: tuple[str, str]) -> str:
        merged = pair[0] + pair[1]
        merges.append(pair)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        return merged

    # Phase 1.
    words = _words(docs)
    freqs = [count for _, count in words]
    splits = [list(word) for word, _ in words]
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for idx, syms in enumerate(splits):
        for pair in pairwise(syms):
            pair_counts[pair] += freqs[idx]
            where[pair].add(idx)

    while len(vocab) < vocab_size and pair_counts:
        best = max(pair_counts, key=lambda pair: (pair_counts[pair], -vocab[pair[0]], -vocab[pair[1]]))
        if pair_counts[best] < min_frequency:
            break
        left, right = best
        merged = add_merge(best)
        for idx in sorted(where.pop(best)):
            syms = splits[idx]
            freq = freqs[idx]
            for pair in pairwise(syms):
                pair_counts[pair] -= freq
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
            out: list[str] = []
            i = 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == left and syms[i + 1] == right:
                    out.append(merged)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            splits[idx] = out
            for pair in pairwise(out):
                pair_counts[pair] += freq
                where[pair].add(idx)

    # Phase 2.
    if len(vocab) < vocab_size:
        ranks: dict[tuple[str, str], int] = {}
        for rank, pair in enumerate(merges):
            ranks.setdefault(pair, rank)
        for ch in _fill_chars():
            if len(vocab) >= vocab_size:
                break
            syms = _segment([byte_map[b] for b in ch.encode("utf-8")], ranks)
            while len(syms) > 1 and len(vocab) < vocab_size:
                pair = (syms[0], syms[1])
                ranks[pair] = len(merges)
                syms[0:2] = [add_merge(pair)]
    if len(vocab) < vocab_size:
        raise ValueError(f"can build at most {len(vocab)} BPE tokens; vocab_size={vocab_size} is too big")
    return vocab, merges


# --------------------------------------------------------------------------------------------------------
# File contents
# --------------------------------------------------------------------------------------------------------


def _added_token(token_id: int, content: str, special: bool) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def added_token_ids(vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, int]:
    """Ids the added tokens get for a given BPE ``vocab_size`` (they follow the BPE vocab)."""
    return {content: vocab_size + i for i, (content, _) in enumerate(ADDED_TOKENS)}


def build_tokenizer_json(vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, Any]:
    """The ``tokenizer.json`` document, keys in the order ``tokenizers`` itself writes them."""
    vocab, merges = train_bpe(_corpus(), vocab_size)
    if len(vocab) != vocab_size:
        raise AssertionError(f"trained {len(vocab)} tokens, expected {vocab_size}")
    ids = added_token_ids(vocab_size)
    eot_id = ids[ENDOFTEXT]
    added = [_added_token(ids[content], content, special) for content, special in ADDED_TOKENS]

    def seq(name: str, type_id: int) -> dict[str, Any]:
        return {"Sequence": {"id": name, "type_id": type_id}}

    def eot(type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": ENDOFTEXT, "type_id": type_id}}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": _pre_tokenizer_json(),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [seq("A", 0), eot(0)],
            "pair": [seq("A", 0), eot(0), seq("B", 1), eot(1)],
            "special_tokens": {ENDOFTEXT: {"id": ENDOFTEXT, "ids": [eot_id], "tokens": [ENDOFTEXT]}},
        },
        "decoder": dict(_BYTE_LEVEL),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            # Qwen's tokenizer.json writes merges as "left right"; byte-level symbols never contain a space.
            "merges": [f"{left} {right}" for left, right in merges],
        },
    }


def _token_entry(content: str, special: bool | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }
    if special is not None:
        entry["special"] = special
    return entry


def build_tokenizer_config(vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, Any]:
    ids = added_token_ids(vocab_size)
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ids[content]): _token_entry(content, special) for content, special in ADDED_TOKENS
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": ENDOFTEXT,
        "padding_side": "right",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def build_special_tokens_map() -> dict[str, Any]:
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "eos_token": _token_entry(IM_END),
        "pad_token": _token_entry(ENDOFTEXT),
    }


def _dumps(obj: Any, *, sort_keys: bool) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=sort_keys) + "\n").encode("utf-8")


def render_tokenizer_files(vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, bytes]:
    """File name -> exact bytes, for every file :func:`write_tokenizer` writes."""
    tok = build_tokenizer_json(vocab_size)
    model = tok["model"]
    merges_txt = "#version: 0.2\n" + "".join(f"{m}\n" for m in model["merges"])
    files = {
        # Key order of tokenizer.json follows `tokenizers`' own serializer and the vocab is in id order.
        "tokenizer.json": _dumps(tok, sort_keys=False),
        "tokenizer_config.json": _dumps(build_tokenizer_config(vocab_size), sort_keys=True),
        "special_tokens_map.json": _dumps(build_special_tokens_map(), sort_keys=True),
        "added_tokens.json": _dumps(added_token_ids(vocab_size), sort_keys=True),
        # Like transformers' Qwen2Tokenizer.save_vocabulary: sorted keys, indent 2.
        "vocab.json": _dumps(model["vocab"], sort_keys=True),
        "merges.txt": merges_txt.encode("utf-8"),
    }
    assert tuple(files) == TOKENIZER_FILES
    return files


def write_tokenizer(out_dir: pathlib.Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[pathlib.Path]:
    """Write the synthetic Qwen3-Embedding tokenizer files into ``out_dir`` (created if missing).

    Returns the written paths in :data:`TOKENIZER_FILES` order.  The result is byte-identical for equal
    ``vocab_size``.  ``vocab_size`` is the size of the BPE vocab (256 byte symbols + merges); the five added
    tokens take ids ``vocab_size .. vocab_size + 4``.
    """
    from tokenizers import Tokenizer

    out_dir = pathlib.Path(out_dir)
    files = render_tokenizer_files(vocab_size)
    # Fail here, not in a consumer, if the document is not something `tokenizers` accepts.
    Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = out_dir / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def special_token_ids(tokenizer_json: pathlib.Path) -> dict[str, int]:
    """``{content: id}`` of the added tokens listed in a ``tokenizer.json`` (special or not)."""
    doc = json.loads(pathlib.Path(tokenizer_json).read_text(encoding="utf-8"))
    return {entry["content"]: int(entry["id"]) for entry in doc.get("added_tokens", [])}
