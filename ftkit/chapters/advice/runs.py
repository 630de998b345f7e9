"""Chapter 5's runs: one arm trained at the chapter's budget and measured (an ArmRow), kept as JSON and read back when
measured already (ftkit.core.store), so 5.3 reads the plain LoRA that 5.1 trained.

Used in notebooks/05_field_advice: `row = ftkit.advice.arm_run("DoRA", profile)`,
`rows = ftkit.advice.arm_rows(["plain LoRA", "DoRA"], profile)`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ftkit.chapters.advice.arms import ARMS, REFERENCE, advice_data, arm_of, hyperparameters_of
from ftkit.chapters.advice.forgetting import general_answers, general_kl, reference_logprobs
from ftkit.chapters.advice.sizes import setup_of
from ftkit.core import store
from ftkit.core.data import answer_batch
from ftkit.core.generation import row_losses
from ftkit.core.memory import measure_step
from ftkit.core.models import load_model, load_tokenizer
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.quiet import quiet_loading
from ftkit.core.train import Result, loraplus_optimizer, run_experiment

RUNS_ENV = "FTKIT_ADVICE_RUNS"


@dataclass
class ArmRow(Result):
    """One arm's run: everything a Result holds, plus what chapter 5 measures of the trained model."""

    arm: str = ""
    claim: str = ""  # the CLAIMS.md id its verdict speaks to (Arm.claim)
    changes: dict = field(default_factory=dict)  # what differs from plain LoRA (Arm.changes)
    test_losses: list = field(default_factory=list)  # each test row's loss on its answer (the same measure for every
    #   arm, whatever loss it trained on)
    # Measured for the arms 5.2 compares (plain LoRA, full FT, QLoRA); empty for the others:
    kl: list = field(default_factory=list)  # per general text, KL(base || trained) in nats per token (forgetting.py)
    kl_quantized: list = field(default_factory=list)  # QLoRA: the same with the adapters off (the 4-bit base alone)
    general: list = field(default_factory=list)  # the trained model's answers to GENERAL_PROMPTS
    step_memory: dict = field(default_factory=dict)  # one training step of this arm, counted by bucket (step_memory)
    measured_at: str = ""
    from_cache: bool = False  # read back from runs_dir() (measured earlier in this run), not trained by this call

    @property
    def seed(self) -> int:
        return self.hyperparameters["seed"]

    @property
    def test_loss(self) -> float:
        """Mean over the test rows of each row's answer loss: the number every arm's quality is decided on."""
        return statistics.fmean(self.test_losses)

    @property
    def exact_match(self) -> float | None:
        """The test split's exact match, or None where the profile does not generate (Setup.generate)."""
        return self.scores.get("test", {}).get("exact_match")

    @property
    def mean_kl(self) -> float:
        """Mean over the general texts of KL(base || trained): how far the model moved where the task never goes."""
        return statistics.fmean(self.kl)

    def as_dict(self) -> dict:
        return {k: v for k, v in super().as_dict().items() if k != "from_cache"}


def runs_dir() -> Path:
    """Where measured arms are kept: $FTKIT_ADVICE_RUNS (on Colab, share_runs sets it to Google Drive), else
    outputs/advice beside the notebook (ftkit.core.store)."""
    return store.runs_dir(RUNS_ENV, "advice")


def share_runs() -> str:
    """Where the chapter's notebooks keep and find their runs, said in every chapter-5 notebook's setup cell."""
    return store.share_on_drive(RUNS_ENV, "advice", "advice-runs")


def run_path(name: str, seed: int, profile: Profile | None = None, model: str | None = None) -> Path:
    """The file of one arm's run: one per arm, seed and settings (a change of settings or code gives a new file)."""
    from ftkit.chapters.advice import arms, forgetting, runs, sizes

    profile = profile or get_profile()
    settings = {"arm": name, "method": arm_of(name).method, "hp": hyperparameters_of(name, profile, seed).as_dict(),
                "setup": asdict(setup_of(profile)) | {"seeds": None}, "profile": profile.as_dict(),
                "model": model or profile.model}
    return store.run_path(runs_dir(), name, seed, store.digest(settings, (sizes, arms, runs, forgetting)))


def arm_run(name: str, profile: Profile | None = None, seed: int | None = None, *, keep_model: bool = False,
            reuse: bool = True, progress: bool = True, model: str | None = None) -> ArmRow:
    """Train one arm at the chapter's budget and measure it: each test row's answer loss, the test exact match (where
    the profile generates), speed (as run_experiment measures it), one step's memory (step_memory), and for the arms
    5.2 compares (plain LoRA, full FT, QLoRA) how far its predictions on general text moved from the base model's and
    its answers to everyday questions. With reuse=True (and keep_model=False) an arm measured already with the same
    settings, seed, library versions and ftkit code is read back, and says when it was measured (ArmRow.measured_at)."""
    profile = profile or get_profile()
    setup = setup_of(profile)
    seed = setup.seeds[0] if seed is None else seed
    path = run_path(name, seed, profile, model)
    kept = store.recall(path, ArmRow, reuse=reuse and not keep_model)
    if kept is not None:
        return kept
    arm, model = arm_of(name), model or profile.model
    data = advice_data(profile)
    forgetting = arm.claim == "5.forgetting" or name == REFERENCE  # the arms 5.2 compares on general text
    reference = reference_logprobs(model, profile) if forgetting else None
    result = run_experiment(arm.method, hyperparameters_of(name, profile, seed), profile=profile, model=model,
                            data=data, eval_every=setup.eval_every, save=False,
                            score_splits=("test",) if setup.generate else (), progress=progress)
    net, tokenizer = result.trained_model, load_tokenizer(model)
    row = ArmRow(**result.as_dict(), arm=name, claim=arm.claim, changes=dict(arm.changes),
                 test_losses=row_losses(net, tokenizer, list(data["test"])),
                 step_memory=step_memory(name, profile, model, list(data["train"])[:setup.batch_size], seed),
                 measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if forgetting:
        row.kl = general_kl(net, tokenizer, reference)
        row.general = general_answers(net, tokenizer) if setup.generate else []
        row.kl_quantized = general_kl(net, tokenizer, reference, adapters=False) if arm.method == "qlora" else []
    store.write(path, row.as_dict())
    row.trained_model = net if keep_model else None
    return row


def arm_rows(names=None, profile: Profile | None = None, *, progress: bool = True) -> dict[str, list[ArmRow]]:
    """Each arm of `names` (default: all of ARMS), for every seed of the profile: {arm: [ArmRow per seed]}."""
    profile = profile or get_profile()
    return {arm_of(name).name: [arm_run(name, profile, seed, progress=progress) for seed in setup_of(profile).seeds]
            for name in (ARMS if names is None else names)}


def step_memory(name: str, profile: Profile, model: str, rows: list[dict], seed: int = 0) -> dict:
    """The memory of one training step of an arm on one batch, counted by bucket (ftkit.measure_step: weights,
    gradients, optimizer state, activations kept for the backward), so arms compare by what they hold, not by how a
    process's memory happened to grow: its model and adapters as loaded (DoRA's magnitudes), its batch (padding-free:
    one flat row), its optimizer (LoRA+'s two rates) and NEFTune's noise on the embeddings."""
    from transformers.integrations.neftune import activate_neftune
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    arm, hp = arm_of(name), hyperparameters_of(name, profile, seed)
    with quiet_loading():
        net, tokenizer = load_model(model, arm.method, precision=profile.precision, device=profile.device, hp=hp)
    batch = answer_batch(tokenizer, rows)
    if hp.padding_free:
        lengths = batch["attention_mask"].sum(dim=1).tolist()  # answer_batch pads on the right
        examples = [{"input_ids": ids[:n].tolist(), "labels": labels[:n].tolist()}
                    for ids, labels, n in zip(batch["input_ids"], batch["labels"], lengths, strict=True)]
        flat = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
        batch = {k: flat[k] for k in ("input_ids", "position_ids", "labels")}
    if hp.neftune_noise_alpha:
        activate_neftune(net, hp.neftune_noise_alpha)  # as the Trainer does at the start of training
    optimizer = loraplus_optimizer(net, hp) if hp.loraplus_lr_ratio else hp.optim
    return measure_step(net, batch, profile, optimizer=optimizer).as_dict()
