"""Chapter 5 · The field's advice, measured: where the popular guides disagree, what fine-tuning forgets, and the
newer methods (NEFTune, DoRA, LoRA+, padding-free batches) against plain LoRA at the same budget.

Used in notebooks/05_field_advice: `rows = ftkit.advice.arm_rows(["plain LoRA", "DoRA"], profile)`."""

from __future__ import annotations

from .arms import ARMS, REFERENCE, Arm, advice_data, arm_of, hyperparameters_of
from .forgetting import GENERAL_PROMPTS, GENERAL_TEXTS, general_answers, general_kl, reference_logprobs, text_logprobs
from .mechanics import normalisation_gap, packing_check, row_gradient, uneven_data
from .runs import ArmRow, arm_rows, arm_run, runs_dir, share_runs, step_memory
from .sizes import SETUPS, setup_of
from .verdicts import (
    accumulation_verdict,
    chapter_verdicts,
    completion_verdict,
    forgetting_verdict,
    layers_verdict,
    method_verdict,
    padding_free_verdict,
    rule_reading,
    speed_and_memory,
    steps_to_reach,
    table,
    train_loss_rule_verdict,
    versus_plain,
)

__all__ = [
    "accumulation_verdict", "advice_data", "Arm", "arm_of", "arm_rows", "arm_run", "ARMS", "ArmRow",
    "chapter_verdicts", "completion_verdict", "forgetting_verdict", "GENERAL_PROMPTS", "GENERAL_TEXTS",
    "general_answers", "general_kl", "hyperparameters_of", "layers_verdict", "method_verdict", "normalisation_gap",
    "packing_check", "padding_free_verdict", "REFERENCE", "reference_logprobs", "row_gradient",
    "rule_reading", "runs_dir", "setup_of", "SETUPS", "share_runs", "speed_and_memory", "step_memory", "table", "steps_to_reach",
    "text_logprobs", "train_loss_rule_verdict", "uneven_data", "versus_plain",
]
