"""Chapter 1's verdicts: each row of theory.md's table (section 1) and its summary decided from measured numbers (or
the memory estimator's), with every threshold a named constant beside its rule.
"""

from __future__ import annotations

import math

from ftkit.core.claims import Verdict, verdict
from ftkit.core.evidence import MIN_PAIRS, SE_MULTIPLE, log_ratios
from ftkit.core.estimate import fit_table
from ftkit.core.memory import human_bytes

ROW_CLAIMS = {"Mechanism": "1.mechanism", "VRAM Usage": "1.vram", "Training Speed": "1.speed",
              "Storage": "1.storage", "Use Case": "1.use-case"}  # each row's id in CLAIMS.md


USE_CASE_MODEL = "Qwen/Qwen2.5-7B"  # the "7B" of the theory's summary (the Colab capstone's model family)
LORA_SHARE = 0.1  # 1.mechanism: LoRA trains under 10 % of the parameters
LORA_FASTER = 1.2  # 1.speed: LoRA's tokens/s at least 1.2x full FT's ("Fast" against "Slowest")
QLORA_SLIGHTLY_SLOWER = 0.75  # ... QLoRA at 0.75x LoRA's speed or more is "slightly slower"
ADAPTER_SMALLER = 10  # 1.storage: the LoRA adapter at least 10x smaller than the full checkpoint ("Tiny" vs "Huge")
SAME_SIZE = 0.1  # ... QLoRA's adapter within 10 % of LoRA's is "the same size"
QLORA_SAVES = 0.1  # 1.vram's detail: QLoRA saving under 10 % over LoRA (activations outweigh the 4-bit weights)
ABOUT_A_QUARTER = 0.35  # ... QLoRA's weights under 0.35 of 16-bit are "about 1/4"
RATE_GAP = 10  # 1.use-case's detail: rates 10x apart compare the rates as much as the methods
SAME_LOSS = 0.05  # ... validation losses within 5 % are "about the same" at this size and noise
SMALL_GPUS = ("T4", "L4", "RTX")  # the theory's "consumer hardware" (T4 and L4 are in fact data-centre cards)


def _count(n: int) -> str:
    """A parameter count as '134.5 M' or '106.8 k'."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _x(a: float, b: float) -> str:
    """a / b as '×1.23'."""
    return f"×{a / b:.2f}" if b else "×inf"


def _ratio(p) -> str:
    """Paired log-ratios as '×1.15 [×1.09–×1.21: ±2 SE over 5 rounds]' (geometric mean), or '×1.15' for one."""
    if p.n < 2:
        return f"×{math.exp(p.mean):.2f}"
    lo, hi = math.exp(p.mean - SE_MULTIPLE * p.se), math.exp(p.mean + SE_MULTIPLE * p.se)
    return f"×{math.exp(p.mean):.2f} [×{lo:.2f}–×{hi:.2f}: ±{SE_MULTIPLE} SE over {p.n} rounds]"


def _side(p, threshold: float) -> bool | None:
    """Which side of `threshold` paired values lie: the noise rule's answer (None inside the noise) with several, the
    value itself with one (a detail may read it; a verdict does not)."""
    return p.above(threshold) if p.n >= MIN_PAIRS else (p.mean > threshold if p.n else None)


def table_verdicts(f: dict) -> dict[str, Verdict]:
    """One verdict per theory row, chosen from the measured numbers (never a fixed answer)."""
    full, lora, qlora = f["full"], f["lora"], f["qlora"]
    cpu = f["device"] == "cpu"
    out = {}

    # Mechanism: who trains what, and is the QLoRA base really 4-bit?
    share = lora["trainable"] / lora["total"]
    ok = full["trainable"] == full["total"] and share < LORA_SHARE and qlora["packed_4bit"] > 0
    text = (f"full FT trains 100 % of the weights, LoRA {100 * share:.1f} %, QLoRA's base is stored in 4 bits" if ok else
            f"full FT trains {100 * full['trainable'] / full['total']:.1f} %, LoRA {100 * share:.1f} %, "
            f"QLoRA has {human_bytes(qlora['packed_4bit'])} of 4-bit weights")
    if not qlora["optim"].startswith("paged"):
        text += (f"; but no paged optimizer here: all three used {qlora['optim']} "
                 + ("(paged optimizers are a CUDA feature of bitsandbytes)" if cpu else "(the same optimizer for a fair comparison)"))
    out["Mechanism"] = verdict(ROW_CLAIMS["Mechanism"], ok, text)

    # VRAM: the ordering, the optimizer state, and QLoRA's "~1/4 of FP16" weights
    order_ok = full["memory"] > lora["memory"] > qlora["memory"]
    quarter = qlora["weights"] / (2 * qlora["total"])  # QLoRA weights vs the same model in 16-bit
    big = f["estimate_7b"]["qlora"]["weights_gib"] / (2 * f["estimate_7b"]["qlora"]["params_b"] * 1e9 / 1024**3)
    text = "full > LoRA > QLoRA " if order_ok else "the order is not full > LoRA > QLoRA "
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
    if change > -QLORA_SAVES and qlora["activations"] > lora["activations"]:
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
    if quarter < ABOUT_A_QUARTER:
        text += f"QLoRA's weights are {quarter:.2f} of 16-bit, about 1/4, as the theory says."
    else:
        text += (f"QLoRA's weights are {quarter:.2f} of 16-bit, not ~1/4: the embeddings, norms (and lm_head) are "
                 f"not quantized, a large share of a small model; for a 7B model the estimate is {big:.2f}.")
    out["VRAM Usage"] = verdict(ROW_CLAIMS["VRAM Usage"], order_ok, text)

    # Training speed: full slowest, LoRA fast, QLoRA slightly slower than LoRA; decided on per-round ratios
    rates = f.get("speed") or {m: [f[m]["tokens_per_s"]] for m in ("full", "lora", "qlora")}  # one value: not settled
    speedup, slowdown = log_ratios(rates["lora"], rates["full"]), log_ratios(rates["qlora"], rates["lora"])
    fast = speedup.above(math.log(LORA_FASTER))
    said = f"LoRA runs at {_ratio(speedup)} full FT's speed"
    if fast:
        text = f"{said}, at least ×{LORA_FASTER} beyond the noise"
    elif fast is None:
        text = (f"{said}: " + ("one measurement, no noise measured" if speedup.n < MIN_PAIRS else
                               f"within the noise of the ×{LORA_FASTER} the rule asks"))
    else:
        text = (f"{said}, not ×{LORA_FASTER} faster, because the frozen weights still do the whole forward and the "
                f"backward through every layer; LoRA saves only the weight gradients (~1/3 of the FLOPs) and the "
                f"optimizer update" + (" (FINDINGS §8: same on this CPU)" if cpu else ""))
    if f.get("speed_batch"):  # the ratio is the batch's: a fixed cost per step weighs less as the batch grows
        text += (f" (at {f['speed_batch']} examples a step: full FT's AdamW update over every weight costs the same "
                 f"whatever the batch, while the forward and backward both methods run grow with it, so LoRA's lead "
                 f"shrinks at larger batches)")
    quantized = _ratio(slowdown)  # the detail: one measurement is read as it is, several by the noise rule
    if _side(slowdown, 0.0) is not False:
        text += (f"; QLoRA is not measurably slower than LoRA, {quantized}: differs here, the dequantization cost "
                 f"is hidden by the rest of the step at this size")
    elif _side(slowdown, math.log(QLORA_SLIGHTLY_SLOWER)) is not False:
        text += f"; QLoRA is slightly slower than LoRA, {quantized}, as the theory says (dequantization)"
    else:
        text += (f"; QLoRA is slower than LoRA as the theory says (dequantization), but at {quantized}, more than "
                 f"'slightly': " + ("on a CPU bitsandbytes dequantizes every 4-bit weight in plain code, without a "
                                     "fused GPU kernel" if cpu else
                                     "at this small size the dequantization is a large share of each step"))
    out["Training Speed"] = verdict(ROW_CLAIMS["Training Speed"], fast, text)

    # Storage: full checkpoint vs adapters
    ratio = full["saved"] / max(lora["saved"], 1)
    tiny = ratio >= ADAPTER_SMALLER
    text = (f"the LoRA adapter is {ratio:.0f}x smaller than the full checkpoint" if tiny else
            f"the LoRA adapter is only {ratio:.1f}x smaller than the full checkpoint")
    per_param = {m: f[m]["saved"] / max(f[m]["trainable"], 1) for m in ("lora", "qlora")}
    if abs(qlora["saved"] - lora["saved"]) <= SAME_SIZE * lora["saved"]:
        text += "; QLoRA's adapter is the same size as LoRA's (same rank, same layers)"
    else:
        text += (f"; QLoRA's adapter is {_x(qlora['saved'], lora['saved'])} LoRA's: {per_param['qlora']:.1f} vs "
                 f"{per_param['lora']:.1f} bytes per adapter parameter (the adapters' dtype differs, not their shape"
                 + ("; TRL's SFTTrainer casts a QLoRA adapter to bf16, as the QLoRA paper does, and keeps LoRA's fp32)"
                    if round(per_param["qlora"]) == 2 and round(per_param["lora"]) == 4 else ")"))
    if full["saved"] > 3 * full["total"]:  # over 3 bytes per parameter: fp32
        text += "; the full checkpoint holds fp32 master weights (4 bytes per parameter)"
    out["Storage"] = verdict(ROW_CLAIMS["Storage"], tiny, text)

    # Use case: did an adapter do the job here, and where would a 7B model fit?
    est = f["estimate_7b"]
    fits = {m: est[m]["smallest_gpu"] or "no single GPU" for m in est}
    qlora_small = (fits["qlora"] or "").startswith(SMALL_GPUS)
    text = ("QLoRA brings a 7B model to one small GPU (the theory's 'consumer' T4/L4/RTX class; the T4 and L4 are "
            "data-centre cards)" if qlora_small else "even QLoRA does not fit one small GPU (T4/L4/RTX class)")
    text += f" (7B estimate, default recipe: full FT needs {fits['full']}, LoRA {fits['lora']}, QLoRA {fits['qlora']})"
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
    if gap >= RATE_GAP:
        text += (f". The methods trained at rates {gap:.0f}x apart (full {full['lr']:g}, LoRA {lora['lr']:g}) for the "
                 f"same few steps: the scores compare the rates as much as the methods")
    best = f.get("full_best")
    if best:
        ratio = best["loss_after"] / lora["loss_after"]
        than = "about the same as" if abs(ratio - 1) <= SAME_LOSS else "lower than" if ratio < 1 else "above"
        text += (f". At its own best rate ({best['lr']:g}, chapter 2's sweep) full FT reaches validation loss "
                 f"{best['loss_after']:.3f} and {best['em_after']:.0%} exact match in the same steps ({than} LoRA's "
                 f"{lora['loss_after']:.3f} at {lora['lr']:g})"
                 + ("; so full FT does not learn less, the text's small rate held it back" if ratio <= 1 + SAME_LOSS
                    else ""))
    out["Use Case"] = verdict(ROW_CLAIMS["Use Case"], qlora_small, text)
    return out


# --- the summary of theory.md section 1: which GPU each method needs, from the memory estimator ---------------------

SUMMARY_MODELS = {"0.5B": "Qwen/Qwen2.5-0.5B", "1.5B": "Qwen/Qwen2.5-1.5B", "7B": "meta-llama/Llama-2-7b-hf",
                  "13B": "meta-llama/Llama-2-13b-hf", "70B": "meta-llama/Llama-2-70b-hf"}
# default: AdamW with fp32 master weights (16 bytes per parameter). memory-saving: bf16 weights and gradients, 8-bit
# AdamW, gradient checkpointing, and the fp32 master copy full FT needs to train in bf16 at all (+4 B/param: without
# it a bf16 step of 1e-5 rounds away on most weights; estimate_memory's master_weights).
SUMMARY_RECIPES = {"default": dict(mixed_precision=True),
                   "memory-saving": dict(precision="bf16", optimizer="adamw_8bit", gradient_checkpointing=True,
                                         master_weights=True)}


def summary_fits(models: dict = SUMMARY_MODELS, recipes: dict = SUMMARY_RECIPES) -> dict:
    """{(recipe, size, method): a row of ftkit.fit_table}: the estimated memory of each model by each method under
    each recipe, and the smallest GPU it fits (None: several GPUs)."""
    size_of = {name: size for size, name in models.items()}
    return {(recipe, size_of[r["model"]], r["method"]): r
            for recipe, kwargs in recipes.items() for r in fit_table(list(models.values()), **kwargs)}


def summary_verdicts(fits: dict, models: dict = SUMMARY_MODELS, recipes: dict = SUMMARY_RECIPES) -> dict[str, Verdict]:
    """1.summary-full, 1.summary-lora and 1.summary-qlora, decided by summary_fits' estimates."""
    def smallest(recipe, size, method):
        return fits[recipe, size, method]["smallest_gpu"]

    out = {}
    full_7b = {recipe: smallest(recipe, "7B", "full") for recipe in recipes}
    cluster_from = {recipe: next((s for s in models if not smallest(recipe, s, "full")), "none here")
                    for recipe in recipes}
    out["1.summary-full"] = verdict(
        "1.summary-full", not any(full_7b.values()),
        f"7B needs {fits['default', '7B', 'full']['total_gib']:.0f} GiB by default "
        f"({full_7b['default'] or 'several GPUs'}), {fits['memory-saving', '7B', 'full']['total_gib']:.0f} GiB with "
        f"bf16 weights and their fp32 master copy, 8-bit AdamW and checkpointing "
        f"({full_7b['memory-saving'] or 'several GPUs'}); several GPUs are "
        f"needed from {cluster_from['default']} (default) or {cluster_from['memory-saving']} (memory-saving)")
    lora_fit = {(recipe, s): smallest(recipe, s, "lora") for recipe in recipes for s in ("7B", "13B")}
    lora_7b = lora_fit["default", "7B"]
    out["1.summary-lora"] = verdict(
        "1.summary-lora", all(lora_fit.values()),
        f"by default 7B fits a {lora_7b}, 13B a {lora_fit['default', '13B']}; memory-saving: 7B a "
        f"{lora_fit['memory-saving', '7B']}, 13B a {lora_fit['memory-saving', '13B']}"
        + ("; for 7B a 24 GB card (A10/L4 class) or less is enough" if lora_7b and lora_7b.startswith(SMALL_GPUS)
           else ""))
    q7, q70 = smallest("default", "7B", "qlora"), {recipe: smallest(recipe, "70B", "qlora") for recipe in recipes}
    small_70b = any(g and g.startswith(SMALL_GPUS) for g in q70.values())
    out["1.summary-qlora"] = verdict(
        "1.summary-qlora", bool(q7 and q7.startswith(SMALL_GPUS)) and small_70b,
        f"7B fits a {q7}; 70B needs "
        + " / ".join(f"{fits[recipe, '70B', 'qlora']['total_gib']:.0f} GiB ({recipe}: {q70[recipe] or 'several GPUs'})"
                     for recipe in recipes)
        + ("" if small_70b else f": beyond a T4, L4 or 24 GB RTX even with QLoRA; the memory-saving recipe brings it "
           f"to one {q70['memory-saving'] or 'GPU bigger than 80 GB'}, the QLoRA paper's claim (a 65B model on one 48 GB "
           "GPU)"))
    return out
