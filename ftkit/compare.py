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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .claims import verdict
from .data import course_batch, profile_dataset
from .hparams import DEFAULT_LEARNING_RATE, SWEPT_BEST_LEARNING_RATE, default_hyperparameters
from .memory import MemoryBreakdown, fit_table, human_bytes, measure_step, weights_by_dtype
from .models import default_upcast, free_memory, load_model
from .profiles import Profile, get_profile
from .train import Result, eval_loss, evaluate_task, load_for_training, run_experiment

CPU_STEPS = 12  # `python -m ftkit compare` on a CPU: 3 methods x 12 steps + scoring; 20 took ~10 min on 2 busy cores
THEORY_ROWS = ("Mechanism", "VRAM Usage", "Training Speed", "Storage", "Use Case")
ROW_CLAIMS = {"Mechanism": "1.mechanism", "VRAM Usage": "1.vram", "Training Speed": "1.speed",
              "Storage": "1.storage", "Use Case": "1.use-case"}  # each row's id in CLAIMS.md
USE_CASE_MODEL = "Qwen/Qwen2.5-7B"  # the "7B" of the theory's summary (the Colab capstone's model family)


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


def default_steps(profile: Profile) -> int:
    """Steps per method for `python -m ftkit compare`: the profile's, but at most CPU_STEPS on a CPU."""
    return min(profile.max_steps, CPU_STEPS) if profile.device == "cpu" else profile.max_steps


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
    phases = 1 + 2 * len(methods) + extra
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
        say(f"[{phases}/{phases}] full: training {steps} steps again at its own best rate, lr {full_best_rate:g} "
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
    return Comparison(results=results, memory=memory, weight_dtypes=dtypes, before=before, profile=profile,
                      batch_tokens=tuple(batch["input_ids"].shape), checkpointing=checkpointing, seconds=seconds,
                      qlora_preparations=preparations, full_best=full_best)


# ---------------------------------------------------------------------------------------------
# Measured facts -> the theory's table with a verdict per row
# ---------------------------------------------------------------------------------------------


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
    if "qlora" in out and comp.qlora_preparations:  # both preparations, same batch (bytes by bucket)
        out["qlora"]["preparation"] = "standard" if default_upcast(comp.profile.precision) else "lean"
        out["qlora"].update({name: m.as_dict() for name, m in comp.qlora_preparations.items()})
    return out


def _count(n: int) -> str:
    """A parameter count as '134.5 M' or '106.8 k'."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _x(a: float, b: float) -> str:
    """a / b as '×1.23'."""
    return f"×{a / b:.2f}" if b else "×inf"


def table_verdicts(f: dict) -> dict[str, str]:
    """One verdict per theory row, chosen from the measured numbers (never a fixed answer)."""
    full, lora, qlora = f["full"], f["lora"], f["qlora"]
    cpu = f["device"] == "cpu"
    out = {}

    # Mechanism: who trains what, and is the QLoRA base really 4-bit?
    share = lora["trainable"] / lora["total"]
    ok = full["trainable"] == full["total"] and share < 0.1 and qlora["packed_4bit"] > 0
    text = verdict(ROW_CLAIMS["Mechanism"], ok,
                   f"full FT trains 100 % of the weights, LoRA {100 * share:.1f} %, QLoRA's base is stored in 4 bits"
                   if ok else
                   f"full FT trains {100 * full['trainable'] / full['total']:.1f} %, LoRA {100 * share:.1f} %, "
                   f"QLoRA has {human_bytes(qlora['packed_4bit'])} of 4-bit weights")
    if not qlora["optim"].startswith("paged"):
        text += (f"; but no paged optimizer here: all three used {qlora['optim']} "
                 + ("(paged optimizers are a CUDA feature of bitsandbytes)" if cpu else "(the same optimizer for a fair comparison)"))
    out["Mechanism"] = text

    # VRAM: the ordering, the optimizer state, and QLoRA's "~1/4 of FP16" weights
    order_ok = full["memory"] > lora["memory"] > qlora["memory"]
    quarter = qlora["weights"] / (2 * qlora["total"])  # QLoRA weights vs the same model in 16-bit
    big = f["estimate_7b"]["qlora"]["weights_gib"] / (2 * f["estimate_7b"]["qlora"]["params_b"] * 1e9 / 1024**3)
    text = verdict(ROW_CLAIMS["VRAM Usage"], order_ok,
                   "full > LoRA > QLoRA " if order_ok else "the order is not full > LoRA > QLoRA ")
    text += (f"({human_bytes(full['memory'])} > {human_bytes(lora['memory'])} > {human_bytes(qlora['memory'])}); "
             f"LoRA's optimizer state is {full['optimizer'] / max(lora['optimizer'], 1):.0f}x smaller. ")
    change = qlora["memory"] / lora["memory"] - 1
    trained = qlora.get("preparation", "lean")
    lean = qlora.get("lean") or ({**qlora, "total": qlora["memory"]} if trained == "lean" else None)
    standard = qlora.get("standard") or ({**qlora, "total": qlora["memory"]} if trained == "standard" else None)
    if lean and standard:  # lean QLoRA against peft's standard preparation, measured on the same batch
        extra = standard["total"] - lean["total"]
        text += ((f"QLoRA here is lean (frozen non-4-bit weights in {f['precision']}); " if trained == "lean" else
                  f"QLoRA here keeps its frozen non-4-bit weights in fp32 (under {f['precision']} a 16-bit residual "
                  f"stream can overflow); lean it would need {human_bytes(lean['total'])}; ")
                 + f"peft's standard prepare_model_for_kbit_training, which upcasts them to fp32, needs "
                 f"{human_bytes(standard['total'])} on the same batch, {human_bytes(extra)} more (weights "
                 f"+{human_bytes(standard['weights'] - lean['weights'])}, activations "
                 f"+{human_bytes(standard['activations'] - lean['activations'])}: the residual stream becomes fp32)"
                 + (f", {100 * (standard['total'] / lora['memory'] - 1):.0f} % more than LoRA. "
                    if standard["total"] > lora["memory"] else ". "))
    if change > -0.1 and qlora["activations"] > lora["activations"]:
        est = f["estimate_7b"]
        text += ((f"QLoRA needs {100 * change:.0f} % more than LoRA here" if change > 0 else
                  f"QLoRA saves only {-100 * change:.0f} % over LoRA here")
                 + f": its 4-bit weights save {human_bytes(lora['weights'] - qlora['weights'])}, but its activations are "
                 f"{human_bytes(qlora['activations'] - lora['activations'])} larger. Activations scale with batch x "
                 f"sequence, weights with the model: for a 7B model the estimate is LoRA {est['lora']['total_gib']:.0f} "
                 f"GiB vs QLoRA {est['qlora']['total_gib']:.0f} GiB. ")
    elif not order_ok:
        bucket = max(("weights", "gradients", "optimizer", "activations"), key=lambda k: abs(lora[k] - qlora[k]))
        text += f"The largest difference between LoRA and QLoRA is in {bucket}. "
    if quarter < 0.35:
        text += f"QLoRA's weights are {quarter:.2f} of 16-bit, about 1/4, as the theory says."
    else:
        text += (f"QLoRA's weights are {quarter:.2f} of 16-bit, not ~1/4: the embeddings, norms (and lm_head) are "
                 f"not quantized, a large share of a small model; for a 7B model the estimate is {big:.2f}.")
    out["VRAM Usage"] = text

    # Training speed: full slowest, LoRA fast, QLoRA slightly slower than LoRA
    speedup, slowdown = lora["tokens_per_s"] / full["tokens_per_s"], qlora["tokens_per_s"] / lora["tokens_per_s"]
    text = verdict(ROW_CLAIMS["Training Speed"], speedup >= 1.2,
                   f"LoRA is {_x(lora['tokens_per_s'], full['tokens_per_s'])} full FT's speed" if speedup >= 1.2 else
                   f"LoRA runs at {_x(lora['tokens_per_s'], full['tokens_per_s'])} full FT's speed, not faster, "
                   f"because the frozen weights still do the whole forward and the backward through every layer; "
                   f"LoRA saves only the weight gradients (~1/3 of the FLOPs) and the optimizer update"
                   + (" (FINDINGS §8: same on this CPU)" if cpu else ""))
    if slowdown >= 1:
        text += (f"; QLoRA is not slower than LoRA ({_x(qlora['tokens_per_s'], lora['tokens_per_s'])}): differs "
                 f"here, the dequantization cost is hidden by the rest of the step at this size")
    elif slowdown >= 0.75:
        text += (f"; QLoRA is slightly slower than LoRA ({_x(qlora['tokens_per_s'], lora['tokens_per_s'])}), as the "
                 f"theory says (dequantization)")
    else:
        text += (f"; QLoRA is slower than LoRA as the theory says (dequantization), but by "
                 f"{_x(qlora['tokens_per_s'], lora['tokens_per_s'])}, more than 'slightly': "
                 + ("on a CPU bitsandbytes dequantizes every 4-bit weight in plain code, without a fused GPU kernel"
                    if cpu else "at this small size the dequantization is a large share of each step"))
    out["Training Speed"] = text

    # Storage: full checkpoint vs adapters
    ratio = full["saved"] / max(lora["saved"], 1)
    text = verdict(ROW_CLAIMS["Storage"], ratio >= 10,
                   f"the LoRA adapter is {ratio:.0f}x smaller than the full checkpoint" if ratio >= 10 else
                   f"the LoRA adapter is only {ratio:.1f}x smaller than the full checkpoint")
    per_param = {m: f[m]["saved"] / max(f[m]["trainable"], 1) for m in ("lora", "qlora")}
    if abs(qlora["saved"] - lora["saved"]) <= 0.1 * lora["saved"]:
        text += "; QLoRA's adapter is the same size as LoRA's (same rank, same layers)"
    else:
        text += (f"; QLoRA's adapter is {_x(qlora['saved'], lora['saved'])} LoRA's: {per_param['qlora']:.1f} vs "
                 f"{per_param['lora']:.1f} bytes per adapter parameter (the adapters' dtype differs, not their shape"
                 + ("; TRL's SFTTrainer casts a QLoRA adapter to bf16, as the QLoRA paper does, and keeps LoRA's fp32)"
                    if round(per_param["qlora"]) == 2 and round(per_param["lora"]) == 4 else ")"))
    if full["saved"] > 3 * full["total"]:
        text += "; the full checkpoint holds fp32 master weights (4 bytes per parameter)"
    out["Storage"] = text

    # Use case: did an adapter do the job here, and where would a 7B model fit?
    # The theory's "consumer hardware (T4, L4, RTX 3090/4090)": small GPUs; the T4 and L4 are data-centre cards.
    est, small_gpus = f["estimate_7b"], ("T4", "L4", "RTX")
    fits = {m: est[m]["smallest_gpu"] or "no single GPU" for m in est}
    text = (f"7B estimate (default recipe): full FT needs {fits['full']}, LoRA {fits['lora']}, QLoRA {fits['qlora']}; ")
    qlora_small = (fits["qlora"] or "").startswith(small_gpus)
    text += verdict(ROW_CLAIMS["Use Case"], qlora_small,
                    "QLoRA brings a 7B model to one small GPU (the theory's 'consumer' T4/L4/RTX class; the T4 and L4 "
                    "are data-centre cards)" if qlora_small else
                    "even QLoRA does not fit one small GPU (T4/L4/RTX class)")
    if max(full["em_after"], lora["em_after"], qlora["em_after"]) <= full["em_before"]:
        text += (f". In these few steps no method raised exact match above {full['em_before']:.0%} yet, so the "
                 f"score cannot tell the methods apart (the validation loss can)")
    elif lora["em_after"] >= full["em_after"]:
        text += (f". On this narrow task an adapter was enough: LoRA reached {lora['em_after']:.0%} exact match, "
                 f"full FT {full['em_after']:.0%}")
    else:
        text += (f". Full FT scored higher here ({full['em_after']:.0%} vs LoRA {lora['em_after']:.0%}): a "
                 f"drastic change of behaviour is where full FT pays")
    if full["lr"] < lora["lr"] and full["em_after"] < lora["em_after"]:
        text += f" (full FT at the theory's smaller learning rate, {full['lr']:g}, moves less in the same steps)"
    gap = max(full["lr"], lora["lr"]) / min(full["lr"], lora["lr"])
    if gap >= 10:
        text += (f". The methods trained at rates {gap:.0f}x apart (full {full['lr']:g}, LoRA {lora['lr']:g}) for the "
                 f"same few steps: the scores compare the rates as much as the methods")
    best = f.get("full_best")
    if best:
        ratio = best["loss_after"] / lora["loss_after"]  # within 5 %: the same, at this size and noise
        than = "about the same as" if abs(ratio - 1) <= 0.05 else "lower than" if ratio < 1 else "above"
        text += (f". At its own best rate ({best['lr']:g}, chapter 2's sweep) full FT reaches validation loss "
                 f"{best['loss_after']:.3f} and {best['em_after']:.0%} exact match in the same steps ({than} LoRA's "
                 f"{lora['loss_after']:.3f} at {lora['lr']:g})"
                 + ("; so full FT does not learn less, the text's small rate held it back" if ratio <= 1.05 else ""))
    out["Use Case"] = text
    return out


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
        "Training Speed": f"{m['tokens_per_s']:.0f} tokens/s",
        "Storage": f"{human_bytes(m['saved'])}" + (" (whole model)" if method == "full" else " (adapter)"),
        "Use Case": f"exact match {m['em_before']:.0%} → {m['em_after']:.0%}, val loss {m['loss_before']:.2f} → "
                    f"{m['loss_after']:.2f}; 7B needs {est['total_gib']:.0f} GiB (est.)",
    }


def theory_table(comp: Comparison) -> str:
    """theory.md's table, section 1, with this run's numbers in every cell and a verdict per row."""
    f = facts(comp)
    cells, said = {m: _cells(f, m) for m in ("full", "lora", "qlora")}, table_verdicts(f)
    lines = ["| Feature | Full Fine-tuning | LoRA | QLoRA | Verdict |", "| :--- | :--- | :--- | :--- | :--- |"]
    lines += [f"| **{row}** | {cells['full'][row]} | {cells['lora'][row]} | {cells['qlora'][row]} | {said[row]} |"
              for row in THEORY_ROWS]
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

    from .plots import plot_bars, plot_stacked

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
