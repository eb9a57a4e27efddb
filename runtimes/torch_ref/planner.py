"""Simple mode on the PyTorch reference: the planner with the checkpoint's chat template, then text2music."""

from __future__ import annotations

from pathlib import Path

from acestep_ort.host import lm_planner
from acestep_parity.torch_ref.lm import TorchLm


def plan_case(lm: TorchLm, checkpoint_dir: Path, case) -> lm_planner.PlannerResult:
    req = lm_planner.case_request(case)
    tables = lm_planner.fsm_tables(lm.tokenizer, checkpoint_dir, req.max_duration)
    prompt = lm.tokenizer.chat_prompt(req.query, req.instrumental)
    return lm_planner.run_planner(lm, lm.tokenizer, tables, req, prompt=prompt)
