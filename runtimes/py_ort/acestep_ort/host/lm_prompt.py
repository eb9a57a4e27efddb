"""Simple-mode prompt for the 5 Hz LM and its token budget (upstream ``acestep/llm_inference.py`` at 82252c2).

``LLMHandler.build_formatted_prompt_for_inspiration`` sends two chat turns through the tokenizer's chat template
(``add_generation_prompt=True``, no ``enable_thinking``):

* system: ``"# Instruction\\n{DEFAULT_LM_INSPIRED_INSTRUCTION}\\n\\n"``
* user: ``"{query}\\n\\ninstrumental: {true|false}"`` (``create_sample_from_query`` replaces an empty or blank
  query with ``"NO USER INPUT"`` first).

:func:`render_qwen3_chat` renders them the way Qwen3's template does; the reference backend instead calls the
checkpoint's own template through transformers (as upstream does) and a test asserts the two agree, so a
checkpoint with another template is caught rather than silently mis-prompted.
"""

from __future__ import annotations

from acestep_ort.host.lm_tokenizer import DEFAULT_LM_INSPIRED_INSTRUCTION, DURATION_MAX, DURATION_MIN

EMPTY_QUERY = "NO USER INPUT"
MAX_MODEL_LEN = 4096  # LLMHandler.__init__ (pt backend; nano-vllm picks 2048/4096 by GPU)
DEFAULT_MAX_NEW_TOKENS = 4096  # getattr(llm.config, "max_new_tokens", 4096)


def inspiration_messages(query: str, instrumental: bool) -> list[dict[str, str]]:
    """The chat turns of ``build_formatted_prompt_for_inspiration`` (after ``create_sample_from_query``'s
    empty-query rule)."""
    if not query or not query.strip():
        query = EMPTY_QUERY
    return [
        {"role": "system", "content": f"# Instruction\n{DEFAULT_LM_INSPIRED_INSTRUCTION}\n\n"},
        {"role": "user", "content": f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}"},
    ]


def render_qwen3_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Qwen3's chat template for plain system/user turns (``<|im_start|>role\\ncontent<|im_end|>\\n``)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def inspiration_prompt(query: str, instrumental: bool) -> str:
    return render_qwen3_chat(inspiration_messages(query, instrumental))


def max_new_tokens(target_duration: float | None = None, config_max_new_tokens: int | None = None,
                   max_model_len: int = MAX_MODEL_LEN, gpu_max_duration: int = DURATION_MAX,
                   generation_phase: str = "understand") -> int:
    """``LLMHandler._compute_max_new_tokens``: simple mode passes no target duration, so the budget is
    ``min(config.max_new_tokens or 4096, 600*5 + 500, max_model_len - 64)`` = 3500 by default."""
    if target_duration is not None and target_duration > 0:
        effective = max(DURATION_MIN, min(min(gpu_max_duration, DURATION_MAX), target_duration))
        codes = int(effective * 5)
        budget = codes + 10 if generation_phase == "codes" else codes + 500
    else:
        cap = DURATION_MAX * 5 + 500
        fallback = DEFAULT_MAX_NEW_TOKENS if config_max_new_tokens is None else config_max_new_tokens
        budget = min(fallback, cap)
    return min(budget, max_model_len - 64)
