"""Chapter 5's arms: plain LoRA, and each piece of the field's advice or each newer method as one change to it, at the
same budget (steps, batch, data, seeds). Full fine-tuning and QLoRA join them for what fine-tuning forgets.

Used in notebooks/05_field_advice: `ftkit.advice.ARMS["DoRA"].says`, `ftkit.advice.advice_data(profile)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ftkit.chapters.advice.sizes import setup_of
from ftkit.core.data import load_course_dataset
from ftkit.core.hparams import SWEPT_BEST_LEARNING_RATE, Hyperparameters, default_hyperparameters
from ftkit.core.profiles import Profile, get_profile

REFERENCE = "plain LoRA"


@dataclass(frozen=True)
class Arm:
    """One arm: a method and what it changes from the course's plain LoRA, and the claim its measurement speaks to."""

    name: str
    method: str  # "lora", "qlora" or "full"
    changes: dict = field(default_factory=dict)  # hyperparameters changed from the reference
    claim: str = ""  # the CLAIMS.md id it is judged under ("" for the reference)
    says: str = ""  # the advice or the authors' claim, and who makes it


ARMS = {arm.name: arm for arm in (
    Arm(REFERENCE, "lora", {}, "",
        "the course's LoRA: r 16, alpha 32, every linear layer, loss on the answer only, lr 1e-3 (chapter 2's best)"),
    Arm("whole-sequence loss", "lora", {"completion_only_loss": False}, "5.completion-only",
        "Unsloth's guide: training on the responses only raises accuracy (about 1 %, after the QLoRA paper); "
        "Raschka (LLMs-from-scratch, ch. 7) and arXiv 2405.14394: masking the instruction scored worse"),
    Arm("q, v only", "lora", {"target_modules": ("q_proj", "v_proj")}, "5.which-layers",
        "PEFT's own benchmarks often adapt q and v only; LoRA Without Regret and Unsloth: every linear layer"),
    Arm("NEFTune", "lora", {"neftune_noise_alpha": 5.0}, "5.neftune",
        "Jain et al. 2023: noise on the input embeddings (alpha 5) improves instruction fine-tuning"),
    Arm("DoRA", "lora", {"use_dora": True}, "5.dora",
        "Liu et al. 2024: weight-decomposed LoRA consistently outperforms LoRA at the same rank"),
    Arm("LoRA+", "lora", {"loraplus_lr_ratio": 16.0}, "5.loraplus",
        "Hayou et al. 2024: B's learning rate 16x A's improves performance and converges up to 2x faster"),
    Arm("padding-free", "lora", {"padding_free": True}, "5.padding-free",
        "TRL: padding-free batches (position ids restarting per example) drop the padding, faster, with no "
        "cross-contamination between the examples of a row"),
    Arm("full FT", "full", {}, "5.forgetting",
        "the course text: full fine-tuning 'changes model behavior drastically'; Biderman et al. 2024: LoRA learns "
        "less and forgets less"),
    Arm("QLoRA", "qlora", {}, "5.forgetting", "QLoRA: LoRA on a 4-bit base"),
)}


def arm_of(name: str) -> Arm:
    """The arm of a name, or a clear error listing them."""
    if name not in ARMS:
        raise ValueError(f"Unknown arm {name!r}: choose one of {', '.join(ARMS)}")
    return ARMS[name]


def hyperparameters_of(name: str, profile: Profile | None = None, seed: int = 0) -> Hyperparameters:
    """An arm's hyperparameters: the method's defaults at the chapter's budget, each method at its own best rate
    (chapter 2's sweep, SWEPT_BEST_LEARNING_RATE), with the arm's changes."""
    arm, setup = arm_of(name), setup_of(profile)
    hp = default_hyperparameters(arm.method, profile or get_profile())
    return replace(hp, max_steps=setup.steps, batch_size=setup.batch_size, seed=seed,
                   learning_rate=SWEPT_BEST_LEARNING_RATE[arm.method], **arm.changes)


def advice_data(profile: Profile | None = None):
    """The chapter's dataset: n_train training records, n_eval validation and test rows (new people in the training
    phrasings), the same for every arm and seed."""
    setup = setup_of(profile)
    return load_course_dataset(n_train=setup.n_train, n_validation=setup.n_eval, n_test=setup.n_eval, n_heldout=1)
