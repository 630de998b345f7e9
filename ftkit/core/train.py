"""Run one fine-tuning experiment on TRL's SFTTrainer and measure it: losses, speed, memory, size, task score.

Used in every notebook: `result = ftkit.run_experiment("lora", profile=profile, learning_rate=1e-3)`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import TrainerCallback

from ftkit.core.data import profile_dataset
from ftkit.core.emulation import attach_grad_scaler
from ftkit.core.generation import evaluate_task
from ftkit.core.hparams import Hyperparameters, check_run, default_hyperparameters, resolve
from ftkit.core.models import (
    autocast,
    cast_qlora_adapters,
    count_parameters,
    is_quantized,
    load_model,
    load_tokenizer,
    training_kernels,
)
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.quiet import quiet_loading, quiet_trainer, quiet_training


@dataclass
class Result:
    """Everything one experiment measured. `history` has one dict per logged step."""

    method: str
    model: str
    hyperparameters: dict
    history: list = field(default_factory=list)  # {"step", "train_loss"|"eval_loss", "learning_rate", "grad_norm"}
    wall_time_s: float = 0.0  # the training call, validation included (no loading, no scoring)
    tokens_per_s: float = 0.0  # non-padding tokens trained on per second of training (validation time excluded)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""  # what peak_memory_bytes is: CUDA max allocated, or CPU process RSS growth
    trainable_params: int = 0
    total_params: int = 0
    saved_bytes: int = 0  # size on disk of what was saved: the adapter, or the whole model for full FT
    output_dir: str = ""  # where checkpoints and the final save are kept ("" when none was asked for)
    restored_step: int | None = None  # with early stopping: the step whose weights were restored and kept
    seconds: dict = field(default_factory=dict)  # where the run's time went, by phase (see run_experiment)
    step_seconds: list = field(default_factory=list)  # each optimizer step's duration (validation excluded)
    scores: dict = field(default_factory=dict)  # split -> {"exact_match", "field_accuracy", ...}
    samples: dict = field(default_factory=dict)  # split -> first few generated answers
    trained_model: object = field(default=None, repr=False)  # the model (None if keep_model=False); never serialised

    def losses(self, kind: str = "train_loss") -> tuple[list[int], list[float]]:
        """(steps, values) of "train_loss", "eval_loss", "learning_rate" or "grad_norm"."""
        rows = [h for h in self.history if kind in h]
        return [h["step"] for h in rows], [h[kind] for h in rows]

    @property
    def steps(self) -> int:
        """Optimizer steps the run made (fewer than planned when early stopping stopped it)."""
        return max((h["step"] for h in self.history), default=0)

    @property
    def best_step(self) -> int | None:
        """The step of the lowest validation loss logged (None when none was)."""
        steps, values = self.losses("eval_loss")
        return steps[values.index(min(values))] if values else None

    @property
    def best_val(self) -> float:
        """The lowest validation loss logged (nan when none was)."""
        return min(self.losses("eval_loss")[1], default=math.nan)

    def final(self, kind: str = "eval_loss") -> float:
        """The last logged value of a history series (nan when never logged)."""
        values = self.losses(kind)[1]
        return values[-1] if values else math.nan

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "trained_model"}

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1))

    @classmethod
    def load_json(cls, path: str | Path) -> Result:
        """A Result saved with save_json (without its model)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, values: dict) -> Result:
        """A Result from as_dict()'s values, also one saved before restored_step had its name (then best_step)."""
        values = dict(values)
        if "best_step" in values:
            values["restored_step"] = values.pop("best_step")
        return cls(**values)


class PeakMemory:
    """Peak memory during a block: CUDA max allocated on a GPU, else growth of the process RSS (sampled every 20 ms)."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.kind = "CUDA max_memory_allocated"
        else:
            import psutil

            process = psutil.Process()
            base = process.memory_info().rss
            self.kind = "CPU process RSS growth during training"

            def sample():
                while not self._stop.wait(0.02):
                    self.peak = max(self.peak, process.memory_info().rss - base)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        return False


def dir_bytes(path: str | Path) -> int:
    """Total size of the files under a folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def to_prompt_completion(dataset):
    """Chat rows -> TRL's conversational prompt/completion rows, so the loss covers only the assistant's answer."""
    with quiet_training():
        return dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                           remove_columns=dataset.column_names)


def sft_trainer(**kwargs):
    """TRL's SFTTrainer (chat template, loss on the answer only) computing that loss the way transformers does.

    TRL 1.16 computes it through its own chunked fp32 LM head, which never builds the logits tensor: a memory win on
    a GPU with a large vocabulary, but about 20 % of a CPU step here (LoRA, 8 steps of 8: 141-162 tokens/s against
    185-197). transformers' loss is also the one ftkit.measure_memory measures and ftkit.estimate_memory models.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class CourseSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def _kernels(self, backward: bool):
            return training_kernels(self.model, self.args.device.type, self.args.bf16 or self.args.fp16,
                                    backward=backward)

        def training_step(self, *args, **kwargs):
            with self._kernels(backward=True):
                return super().training_step(*args, **kwargs)

        def evaluate(self, *args, **kwargs):
            with self._kernels(backward=False):
                return super().evaluate(*args, **kwargs)

    with quiet_training():  # TRL prepares the datasets here: no bar per preparation step
        return quiet_trainer(CourseSFTTrainer(**kwargs))


def load_for_training(method: str, hp: Hyperparameters, profile: Profile, model: str,
                      upcast_frozen_to_fp32: bool | None = None):
    """(model, tokenizer) of a model name set up for one method with hp's adapters, checked against the profile's
    sequence length."""
    net, tokenizer = load_model(model, method, precision=profile.precision, device=profile.device, hp=hp,
                                upcast_frozen_to_fp32=upcast_frozen_to_fp32)
    if profile.max_seq_len > net.config.max_position_embeddings:
        raise ValueError(f"max_seq_len={profile.max_seq_len} is longer than the model's context "
                         f"({net.config.max_position_embeddings} tokens); use at most that.")
    return net, tokenizer


def training_step(model, inputs: dict, optimizer, precision: str) -> float:
    """One training step outside the Trainer, taken as the course's trainer takes it: forward under the training
    autocast and kernels (training_kernels), backward, optimizer step. Returns the loss. Used by chapter 1's speed
    rounds (ftkit.core.speed) and chapter 2's warm-up (gradient noise)."""
    device = next(model.parameters()).device.type
    optimizer.zero_grad(set_to_none=True)
    with training_kernels(model, device, precision != "fp32"):
        with autocast(precision, device):
            loss = model(**inputs).loss
        loss.backward()
    optimizer.step()
    return loss.item()


def trainer_optimizer(optim: str) -> str:
    """The Trainer's name for hp.optim: AdamW as one fused kernel ("adamw_torch_fused", the same update rule; the
    Trainer's "adamw_torch" is its per-tensor loop) on the CPU and CUDA. Measured on ci steps: full fine-tuning 2.46 ->
    2.10 s, LoRA 2.09 -> 1.84 s with identical LoRA losses (python -m ftkit bench measures the step as it is now)."""
    return "adamw_torch_fused" if optim == "adamw_torch" else optim


def build_trainer(model, tokenizer, data, hp: Hyperparameters, *, profile: Profile, output_dir: str,
                  eval_every: int | None = None, early_stopping_patience: int | None = None,
                  save_every: int | None = None, callbacks=(), progress: bool = True):
    """TRL's SFTTrainer for a loaded model (an nn.Module) on a course-shaped dataset, set up from hp and the profile.
    The one place the SFTConfig is built: run_experiment trains with it, compare's eval_loss evaluates with it."""
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig

    eval_every = profile.eval_every if eval_every is None else eval_every
    keep_checkpoints = bool(save_every) or early_stopping_patience is not None
    config = SFTConfig(
        output_dir=output_dir, max_steps=-1 if hp.max_steps is None else hp.max_steps,
        num_train_epochs=hp.num_epochs or 1, per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        per_device_eval_batch_size=hp.batch_size, learning_rate=hp.learning_rate, lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_steps, weight_decay=hp.weight_decay, optim=trainer_optimizer(hp.optim), seed=hp.seed,
        data_seed=hp.seed,
        bf16=profile.precision == "bf16", fp16=profile.precision == "fp16", use_cpu=profile.device == "cpu",
        # padding-free rows are not truncated by TRL (it refuses a max_length there): the course's rows are well under it
        max_length=None if hp.padding_free else profile.max_seq_len, logging_steps=1, eval_strategy="steps", eval_steps=eval_every,
        save_strategy="steps" if keep_checkpoints else "no", save_steps=save_every or eval_every,
        load_best_model_at_end=early_stopping_patience is not None, metric_for_best_model="eval_loss",
        save_total_limit=None if early_stopping_patience is not None else 2,
        include_num_input_tokens_seen="non_padding", report_to="none", disable_tqdm=not progress,
        prediction_loss_only=True,  # validation needs the loss only: no logits kept (a ci evaluation 2.6 s -> 2.0 s)
        # TRL's SFTConfig turns gradient checkpointing ON by default: say what we want (load_model set the model up).
        activation_checkpointing=hp.gradient_checkpointing, dataloader_pin_memory=False,
        completion_only_loss=hp.completion_only_loss, neftune_noise_alpha=hp.neftune_noise_alpha,
        padding_free=hp.padding_free,
    )
    extra = list(callbacks)
    if early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    if profile.precision == "fp16":
        extra.append(OverflowGuard())
    optimizers = (loraplus_optimizer(model, hp), None) if hp.loraplus_lr_ratio else (None, None)
    trainer = sft_trainer(model=model, args=config, train_dataset=to_prompt_completion(data["train"]),
                          eval_dataset=to_prompt_completion(data["validation"]), processing_class=tokenizer,
                          callbacks=extra, optimizers=optimizers)
    if is_quantized(trainer.model):  # TRL has just cast the adapters to bf16: fp32 under fp16 (see adapter_precision)
        cast_qlora_adapters(trainer.model, profile.precision)
    if profile.emulating:
        attach_grad_scaler(trainer)
    return trainer


def loraplus_optimizer(model, hp: Hyperparameters):
    """LoRA+ (peft's create_loraplus_optimizer): the Trainer's fused AdamW, B's rate hp.loraplus_lr_ratio x A's."""
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=hp.learning_rate,
                                     loraplus_lr_ratio=hp.loraplus_lr_ratio, weight_decay=hp.weight_decay, fused=True)


class OverflowGuard(TrainerCallback):
    """Stop an fp16 run whose first loss is not finite: computed before any update, it cannot be the learning rate's
    fault (chapter 2 diverges on purpose later); it is fp16's range (65,504) overflowing in the forward."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step <= 1 and "loss" in (logs or {}) and not math.isfinite(logs["loss"]):
            raise FloatingPointError(
                f"The first training loss is {logs['loss']} under fp16: the forward overflowed fp16's range (65,504) "
                "before any update. Keep the weights that carry the residual stream in fp32 "
                "(upcast_frozen_to_fp32=True, the default under fp16), or train in fp32: "
                "profile = dataclasses.replace(profile, precision='fp32').")


def run_experiment(method: str = "lora", hp: Hyperparameters | None = None, *, profile: Profile | None = None,
                   model: str | None = None, data=None, eval_every: int | None = None,
                   early_stopping_patience: int | None = None, save_every: int | None = None,
                   output_dir: str | None = None, resume: bool = False, save: bool = True, score_splits=("test",),
                   callbacks=(), progress: bool = True, keep_model: bool = True,
                   upcast_frozen_to_fp32: bool | None = None, data_seed: int = 0, start: Result | None = None,
                   **overrides) -> Result:
    """Fine-tune `model` (a name) with `method` on `data` (default: the course dataset) and measure everything.

    hp: the hyperparameters (default: ftkit.default_hyperparameters(method, profile)); any of its fields can also
        be given as a keyword (`learning_rate=3e-4`), which overrides hp's value. num_epochs alone replaces the
        default max_steps; giving both is an error.
    output_dir: keep checkpoints and the final save there; without it they go to a temporary folder that is
        deleted at the end (saved_bytes is measured first).
    save_every: keep a checkpoint every N steps (and resume from the last one when resume=True).
    early_stopping_patience: stop when validation loss has not improved for that many evaluations and keep the best.
    score_splits: dataset splits on which to generate answers and score them after training.
    keep_model: keep the trained model in result.trained_model (False where many results are kept, as in a sweep).
    data_seed: which records the default dataset draws (0: the course's); hp.seed is the training's own seed (the
        adapters' init, the order of the batches, dropout), so two seeds compare on the same data.
    upcast_frozen_to_fp32: LoRA and QLoRA; True keeps the frozen weights outside the decoder's linear layers
        (embeddings, norms, lm_head) in fp32 (for QLoRA: peft's prepare_model_for_kbit_training), False leaves them in
        the compute dtype (lean), None (default) is False except under fp16 (ftkit.models.default_upcast).
    start: a result kept with keep_model=True, whose model trains on instead of a freshly loaded one (same method),
        with a new optimizer and schedule: hp then describes the continuation only.

    result.seconds says where the time went: data, load (the model), prepare (the trainer and its tokenised
    datasets), train (split into setup, first_step, steps, evaluation, other), save, score (generation);
    result.step_seconds holds each step's duration (python -m ftkit bench compares them with this machine's limit).
    """
    from transformers import set_seed

    clock = PhaseClock()
    profile = profile or get_profile()
    hp = resolve(method, hp, profile, overrides)
    model_name = model or profile.model
    data = data if data is not None else profile_dataset(profile, seed=data_seed)
    check_run(hp, n_train=len(data["train"]), device=profile.device)
    set_seed(hp.seed)
    clock.lap("data")
    if start is None:
        net, tokenizer = load_for_training(method, hp, profile, model_name, upcast_frozen_to_fp32)
    elif start.trained_model is None or start.method != method:
        raise ValueError("start= needs a result of the same method that kept its model (run_experiment(..., "
                         f"keep_model=True)); got method {start.method!r}, model kept: {start.trained_model is not None}")
    else:
        net, tokenizer = start.trained_model, load_tokenizer(start.model)
    clock.lap("load")
    keep_files = output_dir is not None  # without an output_dir, checkpoints and saves go to a temporary folder
    output_dir = output_dir or tempfile.mkdtemp(prefix=f"ftkit-{method}-")
    trainer = build_trainer(net, tokenizer, data, hp, profile=profile, output_dir=output_dir, eval_every=eval_every,
                            early_stopping_patience=early_stopping_patience, save_every=save_every,
                            callbacks=callbacks, progress=progress)
    clock.lap("prepare")  # the trainer: TRL tokenises the dataset, builds the config
    result = measure_run(trainer, Result(method=method, model=model_name, hyperparameters=hp.as_dict(),
                                         output_dir=output_dir), resume=resume)
    if early_stopping_patience is not None and trainer.state.best_model_checkpoint:
        result.restored_step = _checkpoint_step(trainer.state.best_model_checkpoint)
    clock.lap("train")
    if save:
        final_dir = Path(output_dir) / "final"
        with quiet_loading():
            trainer.model.save_pretrained(final_dir)
        result.saved_bytes = dir_bytes(final_dir)
    clock.lap("save")
    for split in score_splits:
        result.scores[split], answers = evaluate_task(trainer.model, tokenizer, data[split],
                                                      batch_size=profile.gen_batch_size, progress=progress)
        result.samples[split] = answers[:5]
    clock.lap("score")
    result.seconds = clock.seconds | result.seconds  # measure_run's split of the training call
    if not keep_files:
        shutil.rmtree(output_dir, ignore_errors=True)
        result.output_dir = ""
    result.trained_model = trainer.model if keep_model else None
    release(trainer, keep_model=keep_model)
    return result


def release(trainer, *, keep_model: bool = False) -> None:
    """Break the reference cycles accelerate leaves in a finished run, so that its optimizer state (and, unless
    keep_model, its model) is freed as soon as nothing else holds it, not at the next full garbage collection: a sweep
    of full fine-tunings could run out of GPU memory, and a measured peak could include the last run's AdamW state.
    A kept model keeps the autocast wrapper accelerate put on its forward (generation after training runs as before);
    a dropped one loses it (the wrapper is a bound method of the model, stored on the model: a cycle)."""
    if not keep_model:
        for attr in ("forward", "_original_forward"):
            trainer.model.__dict__.pop(attr, None)
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        # accelerate's optimizer keeps a step method that closes over itself; the inner optimizer may hold it too
        optimizer.__dict__.pop("_optimizer_patched_step_method", None)
        inner = getattr(optimizer, "optimizer", None)
        if inner is not None:
            inner.__dict__.pop("step", None)


def eval_loss(model, tokenizer, data, profile: Profile, hp: Hyperparameters | None = None) -> float:
    """Validation loss of a model exactly as run_experiment's trainer computes it (loss on the answer only), in
    batches of hp.batch_size (default: the profile's LoRA hyperparameters)."""
    with tempfile.TemporaryDirectory(prefix="ftkit-eval-") as tmp:
        trainer = build_trainer(model, tokenizer, data, hp or default_hyperparameters("lora", profile),
                                profile=profile, output_dir=tmp, progress=False)
        return trainer.evaluate()["eval_loss"]


def measure_run(trainer, result: Result, *, resume: bool = False) -> Result:
    """Train (resuming from the newest checkpoint in the trainer's output_dir when asked) and fill result with what
    was measured: history, wall time, tokens/s, peak memory, parameter counts."""
    last = _last_checkpoint(trainer.args.output_dir) if resume else None
    device = "cuda" if trainer.args.device.type == "cuda" else "cpu"
    steps = StepClock(device)
    trainer.add_callback(steps)
    steps.start()
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - start
    trainer.remove_callback(steps)
    result.step_seconds = steps.durations
    result.seconds = steps.split(wall)
    result.trainable_params, result.total_params = count_parameters(trainer.model)
    result.history = history_of(trainer.state.log_history)
    result.wall_time_s = wall
    result.tokens_per_s = _trained_tokens(trainer, last) / (wall - _eval_seconds(trainer, last))
    result.peak_memory_bytes, result.peak_memory_kind = peak.peak, peak.kind
    return result


class PhaseClock:
    """Seconds per phase of a run: lap(name) ends the phase begun at the previous lap (or at the clock's start)."""

    def __init__(self):
        self.seconds, self._last = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = self.seconds.get(name, 0.0) + now - self._last, now


class StepClock(TrainerCallback):
    """Each optimizer step's duration (validation excluded), and the time from start() to the first step: the trainer's
    set-up (dataloader, optimizer, accelerate's preparation)."""

    def __init__(self, device: str):
        self.device, self.durations, self.evaluation = device, [], 0.0
        self._started = self._first = self._begin = None

    def _now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._started = self._now()

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = self._now()
        self._first = self._first or self._begin

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(self._now() - self._begin)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.evaluation += (logs or {}).get("eval_runtime", 0.0)

    def split(self, wall: float) -> dict:
        """The training call's wall time in parts: setup (before the first step), first_step, steps (the others),
        evaluation (validation passes) and other (logging, checkpoints, the end of training)."""
        setup = self._first - self._started if self._first and self._started else 0.0
        parts = {"setup": setup, "first_step": sum(self.durations[:1]), "steps": sum(self.durations[1:]),
                 "evaluation": self.evaluation}
        return parts | {"other": max(wall - sum(parts.values()), 0.0)}


def _last_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N folder in output_dir, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


def _checkpoint_step(path: str) -> int:
    """The step of a Trainer checkpoint folder: .../checkpoint-12 -> 12."""
    return int(path.rstrip("/").split("-")[-1])


def _trained_tokens(trainer, resumed_from: str | None) -> float:
    """Tokens trained on in this call (a resumed run counts only the steps it ran)."""
    seen = trainer.state.num_input_tokens_seen
    if resumed_from:
        state = json.loads((Path(resumed_from) / "trainer_state.json").read_text())
        seen -= state.get("num_input_tokens_seen", 0)
    return float(seen)


def _eval_seconds(trainer, resumed_from: str | None) -> float:
    """Seconds this call spent on validation (logged by the Trainer as eval_runtime)."""
    resumed_step = _checkpoint_step(resumed_from) if resumed_from else 0
    return sum(e["eval_runtime"] for e in trainer.state.log_history if "eval_runtime" in e and e["step"] > resumed_step)


def history_of(log_history: list[dict]) -> list[dict]:
    """Trainer's log into one row per logged event: step, and train_loss / eval_loss / learning_rate / grad_norm."""
    rows = []
    for entry in log_history:
        row = {"step": entry["step"]}
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            row["eval_loss"] = entry["eval_loss"]
        for key in ("learning_rate", "grad_norm"):
            if key in entry:
                row[key] = float(entry[key])
        if len(row) > 1:
            rows.append(row)
    return rows
