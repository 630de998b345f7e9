"""One hyperparameter at a time: the sweep, the explorer, and chapter 2's measurements and verdicts.

Used in notebooks/02_hyperparameters: `s = ftkit.sweep("learning_rate", [1e-5, 1e-4, 1e-3])`, `s.plot()`, `s.table()`;
`python -m ftkit sweep learning_rate 1e-5 1e-4 1e-3` runs the same from a terminal; `ftkit.explore()` is the widget.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .claims import verdict
from .hparams import NAMES

# Light at import (no torch): ftkit imports this module eagerly so that ftkit.sweep is the function, not the module.
# What needs torch, the data or the trainer is imported inside the functions that use it.
if TYPE_CHECKING:
    from .hparams import Hyperparameters
    from .profiles import Profile
    from .train import Result

LOG_SCALE = ("learning_rate", "weight_decay")  # swept over orders of magnitude: plotted on a log axis
# The six hyperparameters of theory.md section 2: the explorer's controls and the chapter's sweeps.
SIX = ("learning_rate", "batch_size", "lora_r", "lora_alpha", "num_epochs", "warmup_steps")


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """One run per value of one hyperparameter, everything else fixed. Tabulates, plots and saves itself."""

    name: str
    method: str
    values: list
    results: list  # one ftkit.Result per value
    fixed: dict = field(default_factory=dict)  # the hyperparameters every run shared (as used)
    seconds: float = 0.0  # wall time of the whole sweep

    def final(self, kind: str = "eval_loss") -> list[float]:
        """The last logged value of `kind` for each value (nan where it was never logged or not finite)."""
        return [r.final(kind) for r in self.results]

    def start_loss(self) -> float:
        """The loss of the untrained model on the first batch (step 1 is computed before any update; with one
        seed every run sees the same first batch)."""
        return self.results[0].losses("train_loss")[1][0]

    def best(self, kind: str = "eval_loss"):
        """The value with the lowest final `kind` (non-finite losses never win)."""
        finals = [v if math.isfinite(v) else math.inf for v in self.final(kind)]
        return self.values[finals.index(min(finals))]

    def rows(self) -> list[dict]:
        """One dict per value: the numbers of table()."""
        rows = []
        for value, r in zip(self.values, self.results, strict=True):
            train = r.losses("train_loss")[1]
            rows.append({self.name: value, "first train loss": train[0] if train else math.nan,
                         "last train loss": train[-1] if train else math.nan, "validation loss": r.final(),
                         "share of steps the loss rose": rise_share(train), "max grad norm":
                         max(r.losses("grad_norm")[1], default=math.nan), "seconds": r.wall_time_s})
        return rows

    def table(self) -> str:
        """A markdown table: one row per value."""
        rows = self.rows()
        head = list(rows[0])
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in rows:
            lines.append("| " + " | ".join(_fmt(v) for v in row.values()) + " |")
        return "\n".join(lines)

    def plot(self, ax=None, kind: str = "eval_loss", label: str | None = None, marker: str = "o-"):
        """Final `kind` against the value (log axis for rates); non-finite runs drawn as x at the top."""
        from .plots import _axes

        ax = _axes(ax)
        ys = self.final(kind)
        finite = [y for y in ys if math.isfinite(y)]
        top = max(finite) * 1.1 if finite else 1.0
        line, = ax.plot(self.values, [y if math.isfinite(y) else math.nan for y in ys], marker,
                        label=label or self.method)
        bad = [v for v, y in zip(self.values, ys, strict=True) if not math.isfinite(y)]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=line.get_color(), ms=9, label=f"{label or self.method}: NaN")
        if self.name in LOG_SCALE:
            ax.set_xscale("log")
        ax.set(xlabel=self.name, ylabel=f"final {kind.replace('_', ' ')}", title=f"Sweep over {self.name}")
        ax.legend(fontsize=7)
        return ax

    def plot_curves(self, ax=None, kind: str = "train_loss"):
        """The `kind` curve of every run, one line per value."""
        from .plots import _axes

        ax = _axes(ax)
        for value, r in zip(self.values, self.results, strict=True):
            ax.plot(*r.losses(kind), "o-" if kind == "eval_loss" else "-", ms=3, label=f"{self.name}={value:g}"
                    if isinstance(value, float) else f"{self.name}={value}")
        ax.set(xlabel="step", ylabel=kind.replace("_", " "), title=f"{self.method}: {kind.replace('_', ' ')} per step")
        ax.legend(fontsize=7)
        return ax

    def as_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "values": self.values, "fixed": self.fixed,
                "seconds": self.seconds, "results": [r.as_dict() for r in self.results]}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1, default=str))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> SweepResult:
        from .train import Result

        d = json.loads(Path(path).read_text())
        return cls(name=d["name"], method=d["method"], values=d["values"], fixed=d["fixed"], seconds=d["seconds"],
                   results=[Result(**r) for r in d["results"]])


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def sweep_hyperparameters(name: str, values, method: str = "lora", *, profile: Profile | None = None,
                          hp: Hyperparameters | None = None, **fixed) -> list[Hyperparameters]:
    """The Hyperparameters of each run of a sweep, all checked before anything trains (a refused value raises here,
    naming the hyperparameter and the value)."""
    from .profiles import get_profile
    from .train import resolve_hyperparameters

    if name not in NAMES:
        raise ValueError(f"Unknown hyperparameter {name!r}; the ones a sweep can vary are: {', '.join(NAMES)}")
    if name in fixed:
        raise ValueError(f"{name} is the swept hyperparameter: give its values in the list, not as {name}=...")
    values = list(values)
    if not values:
        raise ValueError(f"No values to sweep {name} over: give at least one, e.g. sweep({name!r}, [..., ...])")
    profile = profile or get_profile()
    out = []
    for value in values:
        try:
            out.append(resolve_hyperparameters(method, hp, profile, {**fixed, name: value}, caller="sweep"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"sweep: {name}={value!r} is refused: {err}") from err
    return out


def sweep(name: str, values, method: str = "lora", *, profile: Profile | None = None, data=None,
          hp: Hyperparameters | None = None, score_splits=(), eval_every: int | None = None, progress: bool = True,
          **fixed) -> SweepResult:
    """Train once per value of hyperparameter `name`, everything else fixed (hp, then the keyword overrides `fixed`).

    Cheaper than separate default runs, with the same numbers (tests/test_sweep.py checks it): the dataset is built
    once; each run evaluates only at its end unless eval_every is given, saves nothing, scores only score_splits, and
    keeps no model. Loading the base model again costs 0.1-0.3 s of a run here, so each run loads its own.
    One progress bar counts the steps of the whole sweep.
    """
    from tqdm.auto import tqdm

    from .data import profile_dataset
    from .profiles import get_profile
    from .train import run_experiment

    profile = profile or get_profile()
    hps = sweep_hyperparameters(name, values, method, profile=profile, hp=hp, **fixed)
    data = data if data is not None else profile_dataset(profile, seed=hps[0].seed)
    n_train = len(data["train"])
    bar = tqdm(total=sum(h.steps(n_train) for h in hps), desc=f"sweep {name}", disable=not progress)
    start, results = time.perf_counter(), []
    try:
        for value, h in zip(values, hps, strict=True):
            bar.set_postfix_str(f"{name}={value}")
            results.append(run_experiment(method, h, profile=profile, data=data, save=False, keep_model=False,
                                          eval_every=eval_every or h.steps(n_train), score_splits=score_splits,
                                          callbacks=[_StepBar(bar)], progress=False))
    finally:
        bar.close()
    shared = {k: v for k, v in hps[0].as_dict().items() if k != name}
    return SweepResult(name=name, method=method, values=list(values), results=results, fixed=shared,
                       seconds=time.perf_counter() - start)


def _StepBar(bar):
    """A TrainerCallback that advances the sweep's one progress bar by a step and shows the last loss."""
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                bar.set_postfix_str(f"{bar.postfix.split(',')[0] if bar.postfix else ''}, loss {logs['loss']:.3f}")

    return StepBar()


# ---------------------------------------------------------------------------------------------
# The explorer: one function behind the notebook, the CLI and the widget
# ---------------------------------------------------------------------------------------------

def explore_run(method: str = "lora", *, profile: Profile | None = None, data=None, max_steps: int | None = None,
                **values) -> Result:
    """One short training with the six hyperparameters set by name (the rest at the method's defaults)."""
    from .profiles import get_profile
    from .train import run_experiment

    profile = profile or get_profile()
    steps = max_steps or max(4, profile.max_steps // 3)
    return run_experiment(method, profile=profile, data=data, save=False, keep_model=False, score_splits=(),
                          eval_every=max(1, steps // 2), progress=False, max_steps=steps, **values)


def draw_run(result: Result, axes=None):
    """The explorer's figure: loss curves and the learning-rate schedule of one run, side by side."""
    import matplotlib.pyplot as plt

    from .plots import plot_losses, plot_lr

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    h = result.hyperparameters
    plot_losses(result, ax=axes[0], title=f"lr {h['learning_rate']:g}, batch {h['batch_size']}, r {h['lora_r']}, "
                                          f"alpha {h['lora_alpha']:g}")
    plot_lr(result, ax=axes[1])
    return axes


def has_widget_frontend() -> bool:
    """True when ipykernel is imported (a Jupyter kernel: JupyterLab, Colab), ipywidgets imports, and neither
    PYTEST_CURRENT_TEST (nbmake's kernel inherits it from the pytest run that starts it) nor FTKIT_NO_WIDGETS is set.
    A live front end is assumed there; it cannot be asked for. Module names are not looked at: numpy imports
    numpy._pytesttester everywhere."""
    import os
    import sys

    if "ipykernel" not in sys.modules or os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("FTKIT_NO_WIDGETS"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def explore(method: str = "lora", *, profile: Profile | None = None, data=None, widgets: bool | None = None):
    """An ipywidgets panel over the six hyperparameters: press Train to run a short training and redraw the curves.
    Without a widget front end (nbmake, a terminal) it trains once with the defaults and draws once; returns that
    run's Result (or the panel)."""
    import matplotlib.pyplot as plt

    from .data import profile_dataset
    from .profiles import get_profile
    from .train import resolve_hyperparameters

    profile = profile or get_profile()
    data = data if data is not None else profile_dataset(profile)
    defaults = resolve_hyperparameters(method, None, profile, {})
    start = {"learning_rate": defaults.learning_rate, "batch_size": defaults.batch_size, "lora_r": defaults.lora_r,
             "lora_alpha": defaults.alpha, "num_epochs": None, "warmup_steps": 0}
    if not (has_widget_frontend() if widgets is None else widgets):
        result = explore_run(method, profile=profile, data=data, **_explorer_values(start))
        draw_run(result)
        plt.show()
        return result
    import ipywidgets as w
    from IPython.display import display

    controls = {
        "learning_rate": w.FloatLogSlider(value=start["learning_rate"], base=10, min=-6, max=-1, description="lr"),
        "batch_size": w.IntSlider(value=start["batch_size"], min=1, max=16, description="batch"),
        "lora_r": w.Dropdown(options=[2, 4, 8, 16, 32, 64], value=start["lora_r"], description="r"),
        "lora_alpha": w.IntSlider(value=int(start["lora_alpha"]), min=1, max=128, description="alpha"),
        "num_epochs": w.FloatSlider(value=0, min=0, max=5, step=0.5, description="epochs (0: steps)"),
        "warmup_steps": w.IntSlider(value=0, min=0, max=10, description="warmup"),
    }
    button, out = w.Button(description="Train", button_style="primary"), w.Output()

    def on_click(_):
        with out:
            out.clear_output(wait=True)
            values = {k: c.value for k, c in controls.items()}
            values["num_epochs"] = values["num_epochs"] or None
            print("training ...")
            try:
                result = explore_run(method, profile=profile, data=data, **_explorer_values(values))
            except ValueError as err:
                print(f"refused: {err}")
                return
            out.clear_output(wait=True)
            draw_run(result)
            plt.show()
            print(f"final validation loss {result.final():.3f} after {result.wall_time_s:.0f} s")

    button.on_click(on_click)
    panel = w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]), button, out])
    display(panel)
    return panel


def _explorer_values(values: dict) -> dict:
    """The explorer's controls as run_experiment overrides: epochs, when set, replace the step count."""
    values = dict(values)
    if values.get("num_epochs"):
        values["max_steps"] = None
    else:
        values.pop("num_epochs", None)
    return values


# ---------------------------------------------------------------------------------------------
# Measurements without a trainer (batch size)
# ---------------------------------------------------------------------------------------------

def gradient_noise(model, batches: dict[int, list[dict]], *, precision: str = "fp32") -> dict[int, dict]:
    """How much the gradient of the trainable weights varies from batch to batch, per batch size.

    batches: {batch size: [batch, batch, ...]} (ftkit.answer_batch dicts). For each size: the gradient g_i of each
    batch; noise = mean ||g_i - mean g||^2 / ||mean g||^2 (shrinks like 1/b for independent examples) and the mean
    pairwise cosine between the g_i (grows towards 1). Weights are not changed (no optimizer step).
    precision: the autocast training uses (ftkit.autocast), on the model's device."""
    import torch

    from .models import autocast

    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    out = {}
    model.train()
    for size, group in batches.items():
        grads = []
        for batch in group:
            model.zero_grad(set_to_none=True)
            with autocast(precision, device.type):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            grads.append(torch.cat([p.grad.float().flatten() for p in params]))
        g = torch.stack(grads)
        mean = g.mean(0)
        noise = ((g - mean) ** 2).sum(1).mean() / (mean ** 2).sum()
        unit = torch.nn.functional.normalize(g, dim=1)
        cos = unit @ unit.T
        k = len(grads)
        out[size] = {"noise": float(noise), "cosine": float((cos.sum() - k) / (k * (k - 1))) if k > 1 else math.nan,
                     "batches": k}
    model.zero_grad(set_to_none=True)
    return out


def answer_batch(tokenizer, rows, max_len: int = 128) -> dict:
    """ftkit.course_batch with the loss on the assistant's answer only (prompt tokens masked), as training computes it."""
    from .data import course_batch

    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    batch = course_batch(tokenizer, rows, max_len)
    tokenizer.padding_side = side
    for i, row in enumerate(rows):
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
        batch["labels"][i, :len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
    return batch


# ---------------------------------------------------------------------------------------------
# Diagnoses and verdicts (plain numbers in, so a unit test can flip each one)
# ---------------------------------------------------------------------------------------------

TOO_LOW_FRACTION = 0.25  # a rate is "too low" when its loss moved less than this share of what the best rate moved
RISE_SHARE = 0.5  # ... "too high" when the loss rose on more than this share of its steps (oscillation) ...
SWING = 0.5  # ... and swung above its first value by more than this fraction (batch-to-batch noise does not)
ABOVE_START = 1.05  # ... or ended above the untrained model's validation loss by more than 5 % (noise and bf16)
NEAR_BEST = 1.5  # rates whose final loss is within 1.5x of the best one are not told apart: both reached the floor


def rise_share(losses: list[float]) -> float:
    """Share of steps on which the training loss went up (0 for a steady fall; ~0.5 for noise around a level)."""
    if len(losses) < 2:
        return 0.0
    return sum(b > a for a, b in zip(losses, losses[1:])) / (len(losses) - 1)


def oscillates(curve: list[float]) -> bool:
    """The training loss rose on more than RISE_SHARE of its steps and swung SWING above its first value."""
    return rise_share(curve) > RISE_SHARE and max(curve) > (1 + SWING) * curve[0]


def diagnose_rates(start: float, finals: dict, train_losses: dict) -> dict:
    """{rate: "too high" | "too low" | "best" | "ok"} from the untrained model's validation loss, each rate's final
    validation loss and its training-loss curve. Too high: NaN, final above ABOVE_START x start, or oscillating.
    Too low: moved less than TOO_LOW_FRACTION of what the best rate moved."""
    why = {}
    for rate in finals:
        curve = train_losses[rate]
        if not math.isfinite(finals[rate]) or not all(math.isfinite(x) for x in curve):
            why[rate] = "too high"
        elif finals[rate] > ABOVE_START * start or oscillates(curve):
            why[rate] = "too high"
    fine = {r: f for r, f in finals.items() if r not in why}
    if not fine:
        return why
    best = min(fine, key=fine.get)
    for rate, f in fine.items():
        why[rate] = "best" if rate == best else (
            "too low" if start - f < TOO_LOW_FRACTION * (start - fine[best]) else "ok")
    return dict(sorted(why.items()))


def lr_verdicts(start: dict, finals: dict, train_losses: dict, grad_norms: dict) -> dict[str, str]:
    """The four learning-rate verdicts. Each argument is {method: ...}: start loss, {rate: final validation loss},
    {rate: training losses}, {rate: grad norms}."""
    diag = {m: diagnose_rates(start[m], finals[m], train_losses[m]) for m in finals}
    out = {}
    high = {m: [r for r, d in diag[m].items() if d == "too high"] for m in diag}
    out["2.lr-too-high"] = verdict(
        "2.lr-too-high", all(high.values()),
        "; ".join(f"{m}: " + (", ".join(f"{r:g} ({_high_sign(start[m], finals[m][r], train_losses[m][r])})"
                                         for r in high[m]) or f"no rate up to {max(finals[m]):g} diverged")
                  for m in diag))
    low = {m: [r for r, d in diag[m].items() if d == "too low"] for m in diag}
    out["2.lr-too-low"] = verdict(
        "2.lr-too-low", all(low.values()),
        "; ".join(f"{m}: " + (", ".join(f"{r:g} moved the loss {start[m] - finals[m][r]:.3f}" for r in low[m])
                              + f" against {start[m] - min(finals[m][r] for r, d in diag[m].items() if d == 'best'):.3f}"
                              f" at the best rate" if low[m] else f"even {min(finals[m]):g} moved the loss well")
                  for m in diag))
    stuck = {}
    for m in diag:
        for r in low[m][:1]:  # the lowest too-low rate of each method: the clearest case
            g = grad_norms[m][r]
            curve = train_losses[m][r]
            stuck[m, r] = (g[-1] < 0.2 * g[0], g[-1] / g[0], curve[0] - curve[-1])
    if stuck:
        holds = any(s[0] for s in stuck.values())
        detail = "; ".join(f"{m} at {r:g}: grad norm at the end {s[1]:.0%} of its start, loss fell {s[2]:.3f}"
                           for (m, r), s in stuck.items())
        detail += (" — a gradient that vanished where the loss stopped: a minimum" if holds else
                   " — the gradient is still large and the loss still falling, and a larger rate from the same start "
                   "goes far lower: slow progress, not a local minimum; the text's 'stuck in local minima' is loose")
    else:
        holds, detail = False, "no rate was too low here, so nothing could get stuck"
    out["2.lr-local-minima"] = verdict("2.lr-local-minima", holds, detail)
    best = {m: min((r for r, d in diag[m].items() if d == "best"), default=math.nan) for m in diag}
    ratio = best["lora"] / best["full"]
    near = {m: near_best(finals[m], diag[m]) for m in diag}
    low, high = min(near["lora"]) / max(near["full"]), max(near["lora"]) / min(near["full"])
    detail = (f"best LoRA rate {best['lora']:g}, best full-FT rate {best['full']:g}: {ratio:.3g}x (the text's 2e-4 vs "
              f"1e-5 is 20x; LoRA Without Regret reports about 10x)")
    tied = [f"{m}'s " + " and ".join(f"{r:g} ({finals[m][r]:.4f})" for r in near[m]) for m in diag if len(near[m]) > 1]
    if tied:
        detail += (f"; but {' and '.join(tied)} end within {NEAR_BEST:g}x of each other: in these steps they all nearly "
                   f"solve the task, so the sweep places the optimum only between them, and the ratio lies between "
                   f"{low:.3g}x and {high:.3g}x")
    out["2.lr-lora-higher"] = verdict("2.lr-lora-higher", low > 1, detail)
    return out


def near_best(finals: dict, diagnosis: dict) -> list:
    """The rates (not too high) whose final loss is within NEAR_BEST x the best one: the sweep cannot rank them."""
    fine = {r: f for r, f in finals.items() if diagnosis[r] != "too high"}
    floor = min(fine.values(), default=math.nan)
    return sorted(r for r, f in fine.items() if f <= NEAR_BEST * floor) or [math.nan]


def _high_sign(start: float, final: float, curve: list[float]) -> str:
    if not math.isfinite(final) or not all(math.isfinite(x) for x in curve):
        return "NaN"
    if final > ABOVE_START * start:
        return f"ended at {final:.3g}, above the untrained {start:.3g}"
    return f"loss rose on {rise_share(curve):.0%} of steps, up to {max(curve):.3g}"


def batch_verdicts(noise: dict, memory: dict, accumulation: dict) -> dict[str, str]:
    """noise {b: relative gradient variance}; memory {b: bytes of one step}; accumulation {"loss_diff", "weight_diff",
    "tolerance", "memory_small", "memory_big"}: relative differences of batch 8 vs 4 x 2 and their memories."""
    sizes = sorted(noise)
    slope = (math.log(noise[sizes[-1]]) - math.log(noise[sizes[0]])) / (math.log(sizes[-1]) - math.log(sizes[0]))
    out = {"2.batch-stable": verdict(
        "2.batch-stable", noise[sizes[-1]] < 0.5 * noise[sizes[0]],
        f"gradient noise {noise[sizes[0]]:.3g} at batch {sizes[0]} -> {noise[sizes[-1]]:.3g} at batch {sizes[-1]}: "
        f"it falls as b^{slope:.2f} (independent examples give b^-1)")}
    bs = sorted(memory)
    grows = all(memory[a] < memory[b] for a, b in zip(bs, bs[1:]))
    out["2.batch-vram"] = verdict(
        "2.batch-vram", grows, f"one step needs {_mb(memory[bs[0]])} at batch {bs[0]} and {_mb(memory[bs[-1]])} at "
        f"batch {bs[-1]}: +{_mb((memory[bs[-1]] - memory[bs[0]]) / (bs[-1] - bs[0]))} per example (activations)")
    a = accumulation
    same = a["loss_diff"] <= a["tolerance"] and a["weight_diff"] <= a["tolerance"]
    out["2.batch-accumulation"] = verdict(
        "2.batch-accumulation", same and a["memory_small"] < a["memory_big"],
        f"batch 8 vs 4 x 2 accumulation: losses differ by {a['loss_diff']:.2%}, trained weights by "
        f"{a['weight_diff']:.2%} of the update (tolerance {a['tolerance']:.0%}); memory of a step "
        f"{_mb(a['memory_small'])} vs {_mb(a['memory_big'])}")
    return out


def _mb(n: float) -> str:
    from .memory import human_bytes

    return human_bytes(n)


def rank_verdicts(params: dict, formula: dict, memory: dict, val_loss: dict, targets: dict) -> dict[str, str]:
    """params/formula/memory/val_loss: {r: number}; targets: {"all-linear": val loss, "attention": val loss}."""
    rs = sorted(params)
    exact = all(params[r] == formula[r] for r in rs)
    out = {"2.rank-params": verdict(
        "2.rank-params", exact and all(params[a] < params[b] for a, b in zip(rs, rs[1:])),
        ", ".join(f"r={r}: {params[r]:,}" for r in rs) + (" trainable, equal to r(d_in + d_out) summed over the "
                                                          "adapted layers" if exact else " (formula differs!)"))}
    ms = sorted(memory)
    out["2.rank-vram"] = verdict(
        "2.rank-vram", memory[ms[-1]] > memory[ms[0]],
        f"one step needs {_mb(memory[ms[0]])} at r={ms[0]} and {_mb(memory[ms[-1]])} at r={ms[-1]}: "
        f"{(memory[ms[-1]] - memory[ms[0]]) / memory[ms[0]]:+.1%} (the frozen base dominates)")
    vs = sorted(val_loss)
    out["2.rank-capacity"] = verdict(
        "2.rank-capacity", val_loss[vs[-1]] <= val_loss[vs[0]] + 0.01,
        ", ".join(f"r={r}: {val_loss[r]:.3f}" for r in vs) + " validation loss after the same steps (overfitting "
        "needs longer runs on less data: chapter 3)")
    out["2.rank-all-linear"] = verdict(
        "2.rank-all-linear", targets["all-linear"] < targets["attention"],
        f"validation loss all-linear {targets['all-linear']:.3f} vs attention-only {targets['attention']:.3f} at the "
        "same r and steps")
    return out


def alpha_verdicts(val_loss: dict) -> dict[str, str]:
    """val_loss: {scheme: {r: final validation loss}} with schemes "alpha=2r", "fixed alpha" and "rslora"."""
    spread = {s: max(v.values()) - min(v.values()) for s, v in val_loss.items()}
    fixed = val_loss["fixed alpha"]
    rs = sorted(fixed)
    out = {"2.alpha-influence": verdict(
        "2.alpha-influence", fixed[rs[-1]] > val_loss["alpha=2r"][rs[-1]],
        f"at r={rs[-1]}: validation loss {val_loss['alpha=2r'][rs[-1]]:.3f} with alpha=2r vs {fixed[rs[-1]]:.3f} with "
        "the small fixed alpha: a smaller alpha/r moves the model less in the same steps")}
    calm = min(spread, key=spread.get)
    out["2.alpha-rule"] = verdict(
        "2.alpha-rule", spread["alpha=2r"] <= spread["fixed alpha"],
        "spread of validation loss across ranks " + ", ".join(f"{s} {v:.3f}" for s, v in spread.items())
        + f"; the most rank-independent scheme here is {calm}"
        + ("" if spread["alpha=2r"] <= spread["fixed alpha"] else
           ": alpha/r fixed does not keep training the same, because Adam's steps on A and B are the same size "
           "whatever r, so the update B A grows with r unless alpha stays fixed (LoRA Without Regret)"))
    return out


def epoch_verdicts(val_by_epoch: dict) -> dict[str, str]:
    """val_by_epoch: {epoch: validation loss}."""
    es = sorted(val_by_epoch)
    best = min(es, key=val_by_epoch.get)
    rise = val_by_epoch[es[-1]] - val_by_epoch[best]
    detail = (f"validation loss fell to {val_by_epoch[best]:.3f} at epoch {best:g}, then rose by {rise:.3f} by epoch "
              f"{es[-1]:g}")
    if best == es[-1]:
        detail += " — still falling at the last epoch: every epoch here is on the underfitting side"
    elif rise <= 0.01:
        detail += (" — flat after its minimum, not rising (within 0.01): the model reached the task's floor and more "
                   "epochs of the same examples left it there; overfitting shows with fewer records (chapter 3)")
    out = {"2.epochs-fit": verdict("2.epochs-fit", es[0] < best < es[-1] and rise > 0.01, detail)}
    out["2.epochs-typical"] = verdict(
        "2.epochs-typical", 1 <= best <= 3,
        f"the best epoch here is {best:g}" + ("" if best <= 3 else " on a small training set") + "; the text's 1-3 "
        "is for datasets of thousands of examples, where one epoch is already many steps")
    return out


def warmup_verdicts(early_loss: dict, early_grad: dict) -> dict[str, str]:
    """early_loss / early_grad: {"warmup": max over the first steps, "none": same without warmup}."""
    calmer = early_loss["warmup"] < early_loss["none"] and early_grad["warmup"] <= early_grad["none"]
    return {"2.warmup": verdict(
        "2.warmup", calmer,
        f"largest early training loss {early_loss['none']:.3g} without warmup vs {early_loss['warmup']:.3g} with; "
        f"largest early grad norm {early_grad['none']:.3g} vs {early_grad['warmup']:.3g}")}


def accumulation_match(losses_big: list[float], losses_acc: list[float], weights: dict) -> dict:
    """Relative differences between batch B and (B/k) x k accumulation: of the logged losses, and of the trained
    weights measured against the size of the update (weights: {"base", "big", "acc"} flat tensors)."""
    loss_diff = max(abs(a - b) / abs(a) for a, b in zip(losses_big, losses_acc, strict=True))
    update = (weights["big"] - weights["base"]).norm()
    return {"loss_diff": loss_diff, "weight_diff": float((weights["big"] - weights["acc"]).norm() / update)}


def baseline_loss(method: str = "lora", *, profile: Profile | None = None, data=None) -> float:
    """Validation loss of the untrained model as `method` loads it (LoRA's fresh adapters have B = 0: the same
    function), computed exactly as a training run's evaluation computes it."""
    from .data import profile_dataset
    from .models import load_model
    from .profiles import get_profile
    from .train import eval_loss

    profile = profile or get_profile()
    data = data if data is not None else profile_dataset(profile)
    model, tokenizer = load_model(profile.model, method, precision=profile.precision, device=profile.device)
    return eval_loss(model, tokenizer, data, profile)


def flat_trainable(model):
    """All trainable weights of a model as one flat fp32 vector (a torch.Tensor, to compare two trained models)."""
    import torch

    return torch.cat([p.detach().float().flatten() for p in model.parameters() if p.requires_grad])


def accumulation_check(profile: Profile | None = None, *, data=None, steps: int = 2, big: int = 8, k: int = 2,
                       tolerance: float = 0.05, optim: str = "sgd", learning_rate: float = 1e-2,
                       precision: str = "fp32") -> dict:
    """Train LoRA with batch `big` and with batch big/k x k accumulation from the same start on the same examples;
    return how far apart their losses and trained weights are (ftkit.accumulation_match) and both runs.

    optim="sgd" by default: its update is the gradient times the rate, so the weights compare the accumulated
    gradients. AdamW's first update is about lr x sign(gradient): entries whose gradient is ~0 flip sign on rounding
    noise (bf16 here) and move a full step either way, so with AdamW the weights differ although the gradients agree.
    precision="fp32" by default, so the comparison shows the arithmetic: under bf16 autocast the same SGD check
    differed by 4.5-5.3 % of the update from rounding alone (ci, 2026-11-29), on both sides of a 5 % tolerance."""
    from transformers import set_seed

    from .data import profile_dataset
    from .models import load_model
    from .profiles import get_profile
    from .train import run_experiment

    profile = replace(profile or get_profile(), precision=precision)
    data = data if data is not None else profile_dataset(profile)
    common = dict(profile=profile, data=data, save=False, score_splits=(), progress=False, max_steps=steps,
                  eval_every=steps, optim=optim, learning_rate=learning_rate)
    one = run_experiment("lora", batch_size=big, **common)
    acc = run_experiment("lora", batch_size=big // k, gradient_accumulation_steps=k, **common)
    set_seed(0)
    init, _ = load_model(profile.model, "lora", precision=profile.precision, device=profile.device)
    match = accumulation_match(one.losses()[1], acc.losses()[1], {"base": flat_trainable(init),
                               "big": flat_trainable(one.trained_model), "acc": flat_trainable(acc.trained_model)})
    return {**match, "tolerance": tolerance, "big": one, "accumulated": acc}
