"""The capstone's sizes: the QLoRA recipe a free T4 needs, one definition for the notebook and scripts/t4_emulation.py;
what is not a hyperparameter comes from the profile."""

from __future__ import annotations

from dataclasses import replace

from ftkit.core.hparams import Hyperparameters, default_hyperparameters

FAST_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"  # the one-line alternative for a fast run (same recipe)


def capstone_recipe(profile) -> Hyperparameters:
    """The QLoRA hyperparameters a free T4 needs, one definition for the notebook and scripts/t4_emulation.py.

    What is not a hyperparameter comes from the profile: precision (t4: fp16, as a T4 has no real bf16), max_seq_len
    (course examples are ~100 tokens with Qwen's chat template: 256 is room) and eval_every (the notebook also keeps
    a checkpoint at every evaluation, so a disconnected free runtime resumes). The capstone trains run_experiment's
    default preparation: on a T4 (fp16) peft's fp32 upcast of embeddings, lm_head and norms, because a 16-bit residual
    stream can overflow fp16 (Qwen2/2.5 are reported to give NaN; ftkit.models.default_upcast), still under the T4's
    14.75 GiB; under bf16 lean QLoRA, which leaves them in bf16 (Qwen2.5-7B has 1.09 B such weights: ~2 GiB of plan
    saved; scripts/lean_qlora_evidence.py shows both train alike on the CPU)."""
    cuda = profile.device == "cuda"
    return replace(
        default_hyperparameters("qlora", profile),
        # The loss's fp32 buffers (tokens x 152k vocab) dominate a 7B's peak: on a GPU, half the batch twice (same
        # effective batch) keeps the estimated peak near 10 GiB, with room under the T4's 14.75 GiB.
        batch_size=max(1, profile.batch_size // 2) if cuda else profile.batch_size,
        gradient_accumulation_steps=2 if cuda else 1,
        gradient_checkpointing=True,  # recompute activations in backward: ~1/28 of the activations for ~30 % time
        # 8-bit moments in CUDA unified memory, moved to CPU RAM only under memory pressure; needs CUDA
        optim="paged_adamw_8bit" if cuda else "adamw_torch",
        lora_r=16, lora_alpha=32, lora_dropout=0.05,  # alpha = 2 r (the theory's rule of thumb)
        target_modules="all-linear",  # every linear layer of every block (QLoRA paper: needed to match full FT)
        learning_rate=2e-4,  # the theory's LoRA/QLoRA value
        lr_scheduler="cosine", warmup_steps=max(1, profile.max_steps // 10),
    )
