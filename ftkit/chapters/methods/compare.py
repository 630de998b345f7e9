"""The course's main job: Full fine-tuning vs LoRA vs QLoRA on one model, same data, same steps, measured.

For each method: train with `run_experiment` (same data, steps, batch and seed), then measure one extra training
step on one batch of course data, bucket by bucket, with `ftkit.memory.measure_memory` (after everything else was
measured, so the training run is untouched). The base model is scored once, so each method shows before -> after.
`theory_table` prints theory.md's table (section 1) with a measured value in every cell and a verdict per row that
code chooses from the numbers.

Used in notebooks/01_methods/03_three_methods_side_by_side.ipynb and as `python -m ftkit compare`.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ftkit.chapters.methods.sizes import sizes
from ftkit.chapters.methods.verdicts import USE_CASE_MODEL, _count, table_verdicts
from ftkit.core.claims import Verdict
from ftkit.core.data import course_batch, profile_dataset
from ftkit.core.estimate import fit_table
from ftkit.core.hparams import DEFAULT_LEARNING_RATE, SWEPT_BEST_LEARNING_RATE, default_hyperparameters
from ftkit.core.memory import MemoryBreakdown, human_bytes, measure_step, weights_by_dtype
from ftkit.core.models import default_upcast, free_memory, load_model
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.speed import SpeedRounds, interleaved_speed
from ftkit.core.generation import evaluate_task
from ftkit.core.train import Result, eval_loss, load_for_training, run_experiment

THEORY_ROWS = ("Mechanism", "VRAM Usage", "Training Speed", "Storage", "Use Case")


@dataclass
class Comparison:
    """What compare_methods measured. `before`: the base model's scores and validation loss."""

    results: dict[str, Result]
    memory: dict[str, MemoryBreakdown]  # one measured training step per method, by bucket
    weight_dtypes: dict[str, dict[str, int]]  # bytes of weights by dtype per method ("uint8" = packed 4-bit)
    before: dict
    profile: Profile
    batch_tokens: tuple[int, int]  # (batch size, padded length) of the measured batch
    checkpointing: dict[str, bool] = field(default_factory=dict)  # gradient checkpointing on during training
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase: load + train + score + measure
    # QLoRA's two preparations on the same batch, "lean" (frozen non-4-bit weights in the compute dtype) and "standard"
    # (peft's prepare_model_for_kbit_training: those weights in fp32): the one trained (ftkit.models.default_upcast:
    # standard under fp16, else lean) is memory["qlora"], the other one step of a fresh model.
    qlora_preparations: dict[str, MemoryBreakdown] = field(default_factory=dict)
    # Full FT trained a second time, at its own best rate (chapter 2's sweep), same steps and data: scores only.
    full_best: Result | None = None
    # The Training Speed row: fresh models of every method timed in interleaved rounds on the measured batch.
    speed: SpeedRounds | None = None


def default_steps(profile: Profile) -> int:
    """Steps per method for `python -m ftkit compare` (make course): chapter 1's sizes."""
    return sizes(profile).cli_steps


def compare_methods(profile: Profile | None = None, *, model: str | None = None, steps: int | None = None,
                    seq_len: int | None = None, methods=("full", "lora", "qlora"), learning_rates=None,
                    full_best_rate: float | None = SWEPT_BEST_LEARNING_RATE["full"], score_splits=("test",),
                    keep_models: bool = False, progress: bool = True) -> Comparison:
    """Score the base model, then train and measure each method for the same steps on the same data.

    learning_rates: {method: rate} over DEFAULT_LEARNING_RATE (full FT at the text's 1e-5). full_best_rate: full FT
    also trains once more at this rate (default: its best in chapter 2's sweep), same steps, scored but not measured,
    so the verdicts can say what full FT reaches at its own rate; None skips it."""
    profile = profile or get_profile()
    profile = replace(profile, max_seq_len=seq_len or profile.max_seq_len)
    model_name = model or profile.model
    steps = steps or profile.max_steps
    learning_rates = {**DEFAULT_LEARNING_RATE, **(learning_rates or {})}
    data = profile_dataset(profile)
    say = print if progress else (lambda *a, **k: None)
    extra = "full" in methods and full_best_rate is not None and full_best_rate != learning_rates["full"]
    phases = 2 + 2 * len(methods) + extra
    start = time.perf_counter()

    say(f"[1/{phases}] base model {model_name}: scoring before fine-tuning", flush=True)
    base, tokenizer = load_model(model_name, "full", precision=profile.precision, device=profile.device)
    before = dict(evaluate_task(base, tokenizer, data[score_splits[0]], batch_size=profile.gen_batch_size,
                                progress=progress)[0]) if score_splits else {}
    before["eval_loss"] = eval_loss(base, tokenizer, data, profile)
    batch = course_batch(tokenizer, data["train"].select(range(profile.batch_size)), profile.max_seq_len)
    del base
    free_memory()  # so each measurement sees one model only
    seconds = {"base": time.perf_counter() - start}

    results, memory, dtypes, checkpointing = {}, {}, {}, {}
    for i, method in enumerate(methods):
        t0 = time.perf_counter()
        say(f"[{2 + 2 * i}/{phases}] {method}: training {steps} steps, lr {learning_rates[method]:g}", flush=True)
        result = run_experiment(method, profile=profile, model=model_name, data=data, max_steps=steps,
                                learning_rate=learning_rates[method], eval_every=steps,  # the table needs the last only
                                score_splits=score_splits, progress=progress)
        say(f"[{3 + 2 * i}/{phases}] {method}: measuring memory of one training step "
            f"({batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} tokens)", flush=True)
        memory[method] = measure_step(result.trained_model, batch, profile)  # as trained: same checkpointing
        checkpointing[method] = bool(getattr(result.trained_model, "is_activation_checkpointing", False))
        dtypes[method] = weights_by_dtype(result.trained_model)
        if not keep_models:
            result.trained_model = None
        free_memory()  # so each measurement sees one model only
        results[method] = result
        seconds[method] = time.perf_counter() - t0
        say(f"      {method}: {seconds[method]:.0f} s in all ({result.wall_time_s:.0f} s training)", flush=True)
    full_best = None
    if extra:
        t0 = time.perf_counter()
        say(f"[{phases - 1}/{phases}] full: training {steps} steps again at its own best rate, lr {full_best_rate:g} "
            f"(chapter 2's sweep)", flush=True)
        full_best = run_experiment("full", profile=profile, model=model_name, data=data, max_steps=steps,
                                   learning_rate=full_best_rate, eval_every=steps, score_splits=score_splits,
                                   progress=progress, save=False, keep_model=False)
        free_memory()
        seconds["full at its best rate"] = time.perf_counter() - t0
    preparations = {}
    if "qlora" in methods:  # the preparation not trained: one step of a fresh model on the same batch (no training)
        trained = "standard" if default_upcast(profile.precision) else "lean"
        other = "lean" if trained == "standard" else "standard"
        say(f"      qlora: measuring one step with the {other} preparation "
            + ("(frozen weights upcast to fp32)" if other == "standard" else "(frozen weights 16-bit)"), flush=True)
        hp = default_hyperparameters("qlora", profile)
        fresh, _ = load_for_training("qlora", hp, profile, model_name, upcast_frozen_to_fp32=other == "standard")
        preparations = {trained: memory["qlora"], other: measure_step(fresh, batch, profile)}
        del fresh
        free_memory()
    t0 = time.perf_counter()
    size = sizes(profile)
    say(f"[{phases}/{phases}] speed: every method's training step timed in {size.speed_rounds} interleaved rounds "
        f"(fresh models, same batch)", flush=True)
    speed = time_methods(methods, batch, profile, model_name, rounds=size.speed_rounds, steps=size.speed_steps,
                         progress=progress)
    seconds["speed"] = time.perf_counter() - t0
    return Comparison(results=results, memory=memory, weight_dtypes=dtypes, before=before, profile=profile,
                      batch_tokens=tuple(batch["input_ids"].shape), checkpointing=checkpointing, seconds=seconds,
                      qlora_preparations=preparations, full_best=full_best, speed=speed)


def time_methods(methods, batch: dict, profile: Profile, model_name: str, *, rounds: int, steps: int,
                 progress: bool = True) -> SpeedRounds:
    """Each method's steady-state training step, timed in interleaved rounds (ftkit.core.speed) on fresh models held
    side by side, with the optimizer the runs use. The models are discarded afterwards."""
    models = {}
    for method in methods:
        hp = default_hyperparameters(method, profile)
        models[method] = load_for_training(method, hp, profile, model_name)[0]
    try:  # every method trains with the same optimizer (adamw_torch), so one name serves all
        return interleaved_speed(models, batch, precision=profile.precision, rounds=rounds, steps_per_round=steps,
                                 optimizer=default_hyperparameters("full", profile).optim, progress=progress)
    finally:
        models.clear()
        free_memory()


# ---------------------------------------------------------------------------------------------
# Measured facts -> the theory's table with a verdict per row
# ---------------------------------------------------------------------------------------------


def _cells(f: dict, method: str) -> dict[str, str]:
    """The measured value of each theory row for one method."""
    m = f[method]
    base = {"full": "all weights trainable, fp32", "lora": f"base frozen in {f['precision']}",
            "qlora": f"base frozen in 4-bit ({human_bytes(m['packed_4bit'])} packed)"}[method]
    est = f["estimate_7b"][method]
    return {
        "Mechanism": f"trains {_count(m['trainable'])} of {_count(m['total'])} params "
                     f"({100 * m['trainable'] / m['total']:.2f} %); {base}",
        "VRAM Usage": f"{human_bytes(m['memory'])} = weights {human_bytes(m['weights'])} + grads "
                      f"{human_bytes(m['gradients'])} + optimizer {human_bytes(m['optimizer'])} + activations "
                      f"{human_bytes(m['activations'])}"
                      + (f"; CUDA peak {human_bytes(m['peak'])}" if f["device"] == "cuda" else ""),
        "Training Speed": (f"{statistics.median(f['speed'][method]):.0f} tokens/s per step (the run: "
                           f"{m['tokens_per_s']:.0f})" if "speed" in f else f"{m['tokens_per_s']:.0f} tokens/s"),
        "Storage": f"{human_bytes(m['saved'])}" + (" (whole model)" if method == "full" else " (adapter)"),
        "Use Case": f"exact match {m['em_before']:.0%} → {m['em_after']:.0%}, val loss {m['loss_before']:.2f} → "
                    f"{m['loss_after']:.2f}; 7B needs {est['total_gib']:.0f} GiB (est.)",
    }


def theory_verdicts(comp: Comparison) -> dict[str, Verdict]:
    """The verdict on each row of theory.md's table, by row name, from this run's numbers."""
    return table_verdicts(facts(comp))


def theory_table(comp: Comparison) -> str:
    """theory.md's table, section 1, with this run's numbers in every cell and each row's outcome (the verdicts, with
    the numbers that decided them: theory_verdicts)."""
    f = facts(comp)
    cells, said = {m: _cells(f, m) for m in ("full", "lora", "qlora")}, table_verdicts(f)
    lines = ["| Feature | Full Fine-tuning | LoRA | QLoRA | Verdict |", "| :--- | :--- | :--- | :--- | :--- |"]
    lines += [f"| **{row}** | {cells['full'][row]} | {cells['lora'][row]} | {cells['qlora'][row]} | "
              f"{said[row].outcome} |" for row in THEORY_ROWS]
    if "speed_how" in f:
        lines += ["", f"Training Speed: {f['speed_how']}; the run's own tokens/s (warm-up included) in brackets."]
    return "\n".join(lines)


def comparison_table(comp: Comparison) -> str:
    """A Markdown table with one column per method and one measured row per property."""
    results, memory = comp.results, comp.memory
    rows = {
        "trainable parameters": lambda m: f"{results[m].trainable_params:,} "
                                          f"({100 * results[m].trainable_params / results[m].total_params:.2f} %)",
        **{f"memory: {k}": (lambda m, k=k: human_bytes(getattr(memory[m], k)))
           for k in ("weights", "gradients", "optimizer", "activations", "total")},
        "peak memory (training)": lambda m: human_bytes(results[m].peak_memory_bytes),
        "tokens / second": lambda m: f"{results[m].tokens_per_s:.0f}",
        "training time": lambda m: f"{results[m].wall_time_s:.0f} s",
        "saved on disk": lambda m: human_bytes(results[m].saved_bytes),
        "validation loss": lambda m: f"{comp.before.get('eval_loss', math.nan):.3f} → {results[m].final('eval_loss'):.3f}",
        "exact match (test)": lambda m: f"{comp.before.get('exact_match', math.nan):.0%} → "
                                        f"{results[m].scores.get('test', {}).get('exact_match', math.nan):.0%}",
    }
    methods = list(results)
    lines = ["| | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    lines += [f"| {name} | " + " | ".join(cell(m) for m in methods) + " |" for name, cell in rows.items()]
    first = next(iter(results.values()))
    lines.append(f"\nmemory buckets: one training step on a batch of {comp.batch_tokens[0]} x {comp.batch_tokens[1]} "
                 f"tokens (ftkit.memory.measure_memory), gradient checkpointing "
                 f"{'on' if any(comp.checkpointing.values()) else 'off'} as in training; "
                 f"peak memory (training) is {first.peak_memory_kind}.")
    return "\n".join(lines)


def plot_comparison(comp: Comparison):
    """Memory by bucket (stacked) and tokens/s, one bar per method; returns the figure."""
    import matplotlib.pyplot as plt

    from ftkit.core.plots import plot_bars, plot_stacked

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    plot_stacked({m: {k: v for k, v in b.as_dict().items() if k not in ("total", "peak_gpu")}
                  for m, b in comp.memory.items()}, ax=axes[0], title="Memory of one training step", scale=2**20,
                 ylabel="MiB")
    plot_bars({m: r.tokens_per_s for m, r in comp.results.items()}, ax=axes[1], title="Training speed",
              ylabel="tokens / s", fmt="{:.0f}")
    fig.suptitle(f"{next(iter(comp.results.values())).model} on {comp.profile.device}, {comp.profile.precision}")
    fig.tight_layout()
    return fig


def save_plot(comp: Comparison, out_dir: str | Path = "outputs/compare") -> Path:
    """Write plot_comparison's figure as PNG under out_dir; returns its path."""
    import matplotlib.pyplot as plt

    path = Path(out_dir) / "compare.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_comparison(comp)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def facts(comp: Comparison) -> dict:
    """The numbers the verdicts use, as plain values: {method: {...}} plus "device" and "estimate_7b"."""
    out = {"device": comp.profile.device, "precision": comp.profile.precision,
           "estimate_7b": {row["method"]: row for row in fit_table([USE_CASE_MODEL], mixed_precision=True)}}
    for method, r in comp.results.items():
        m, test = comp.memory[method], r.scores.get("test", {})
        out[method] = dict(
            trainable=r.trainable_params, total=r.total_params, weights=m.weights, gradients=m.gradients,
            optimizer=m.optimizer, activations=m.activations, memory=m.total, peak=m.peak_gpu or r.peak_memory_bytes,
            packed_4bit=comp.weight_dtypes[method].get("uint8", 0), tokens_per_s=r.tokens_per_s,
            saved=r.saved_bytes, optim=r.hyperparameters["optim"], lr=r.hyperparameters["learning_rate"],
            em_before=comp.before.get("exact_match", math.nan), em_after=test.get("exact_match", math.nan),
            loss_before=comp.before.get("eval_loss", math.nan), loss_after=r.final("eval_loss"))
    if comp.full_best is not None:  # full FT again at its own best rate: what it learns when the rate is its own
        r = comp.full_best
        out["full_best"] = dict(lr=r.hyperparameters["learning_rate"], loss_after=r.final("eval_loss"),
                                em_after=r.scores.get("test", {}).get("exact_match", math.nan))
    if comp.speed is not None:  # the Training Speed row: tokens/s per interleaved round, and how it was measured
        out["speed"] = {method: list(rates) for method, rates in comp.speed.rates.items()}
        out["speed_how"] = comp.speed.how()
        out["speed_batch"] = comp.batch_tokens[0]
    if "qlora" in out and comp.qlora_preparations:  # both preparations, same batch (bytes by bucket)
        out["qlora"]["preparation"] = "standard" if default_upcast(comp.profile.precision) else "lean"
        out["qlora"].update({name: m.as_dict() for name, m in comp.qlora_preparations.items()})
    return out
