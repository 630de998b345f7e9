"""One hyperparameter at a time: train once per value, everything else fixed, and tabulate, plot and save the runs.

Used in notebooks/02_hyperparameters: `s = ftkit.hyperparameters.sweep("learning_rate", [1e-5, 1e-4, 1e-3])`,
`s.plot()`, `s.table()`; `python -m ftkit sweep learning_rate 1e-5 1e-4 1e-3` runs the same from a terminal.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from ftkit.core.configs import model_shape
from ftkit.core.data import profile_dataset
from ftkit.core.estimate import lora_params
from ftkit.core.hparams import NAMES, Hyperparameters, resolve
from ftkit.core.plots import _axes
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.train import Result, run_experiment

LOG_SCALE = ("learning_rate", "weight_decay")  # swept over orders of magnitude: plotted on a log axis
# The six hyperparameters of theory.md section 2: the explorer's controls and the chapter's sweeps.
SIX = ("learning_rate", "batch_size", "lora_r", "lora_alpha", "num_epochs", "warmup_steps")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")  # 2.3's placements of the adapters: attention-only ...
MLP = ("gate_proj", "up_proj", "down_proj")  # ... and MLP-only (all-linear: both)


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

        d = json.loads(Path(path).read_text())
        return cls(name=d["name"], method=d["method"], values=d["values"], fixed=d["fixed"], seconds=d["seconds"],
                   results=[Result.from_dict(r) for r in d["results"]])


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def sweep_hyperparameters(name: str, values, method: str = "lora", *, profile: Profile | None = None,
                          hp: Hyperparameters | None = None, **fixed) -> list[Hyperparameters]:
    """The Hyperparameters of each run of a sweep, all checked before anything trains (a refused value raises here,
    naming the hyperparameter and the value)."""

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
            out.append(resolve(method, hp, profile, {**fixed, name: value}, caller="sweep"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"sweep: {name}={value!r} is refused: {err}") from err
    return out


def sweep(name: str, values, method: str = "lora", *, profile: Profile | None = None, data=None,
          hp: Hyperparameters | None = None, score_splits=(), eval_every: int | None = None, progress: bool = True,
          data_seed: int = 0, bar=None, **fixed) -> SweepResult:
    """Train once per value of hyperparameter `name`, everything else fixed (hp, then the keyword overrides `fixed`).

    Cheaper than separate default runs, with the same numbers (tests/test_sweep.py checks it): the dataset is built
    once; each run evaluates only at its end unless eval_every is given, saves nothing, scores only score_splits, and
    keeps no model. Loading the base model again costs 0.1-0.3 s of a run here, so each run loads its own.
    One progress bar counts the steps of the whole sweep (`bar`: an outer tqdm bar to advance instead, for several
    sweeps under one bar). data_seed: which records the default dataset draws.
    """
    profile = profile or get_profile()
    hps = sweep_hyperparameters(name, values, method, profile=profile, hp=hp, **fixed)
    data = data if data is not None else profile_dataset(profile, seed=data_seed)
    n_train = len(data["train"])
    own = bar is None
    bar = tqdm(total=sum(h.steps(n_train) for h in hps), desc=f"sweep {name}", disable=not progress) if own else bar
    start, results = time.perf_counter(), []
    try:
        for value, h in zip(values, hps, strict=True):
            bar.set_postfix_str(f"{name}={value}")
            results.append(run_experiment(method, h, profile=profile, data=data, save=False, keep_model=False,
                                          eval_every=eval_every or h.steps(n_train), score_splits=score_splits,
                                          callbacks=[_StepBar(bar)], progress=False))
    finally:
        if own:
            bar.close()
    shared = {k: v for k, v in hps[0].as_dict().items() if k != name}
    return SweepResult(name=name, method=method, values=list(values), results=results, fixed=shared,
                       seconds=time.perf_counter() - start)


def seeded_sweeps(name: str, values, seeds, method: str = "lora", *, profile: Profile, data, progress: bool = True,
                  desc: str | None = None, **fixed) -> dict[int, SweepResult]:
    """The same sweep once per seed (the adapters' init, the data order, dropout: the noise rule's pairs), under one
    progress bar. {seed: SweepResult}."""
    hps = sweep_hyperparameters(name, values, method, profile=profile, **fixed)
    total = len(seeds) * sum(h.steps(len(data["train"])) for h in hps)
    with tqdm(total=total, desc=desc or f"sweep {name} x {len(seeds)} seeds", disable=not progress) as bar:
        return {seed: sweep(name, values, method, profile=profile, data=data, bar=bar, seed=seed, **fixed)
                for seed in seeds}


def training_floor(result: Result) -> float:
    """The training loss a run settled at: the mean over its last quarter of steps (at least 2)."""
    losses = result.losses("train_loss")[1]
    tail = losses[-max(2, len(losses) // 4):]
    return sum(tail) / len(tail)


def capacity_runs(ranks, *, alpha: int, learning_rate: float, epochs: int, profile: Profile, data, seeds=(0, 1, 2),
                  progress: bool = True) -> dict[int, dict]:
    """Capacity, apart from step size: each rank trains at the same fixed alpha (under Adam the update BA grows with
    r, and alpha/r shrinks as 1/r: the effective step stays about the same), for `epochs` passes over a small
    training set, on each seed. {seed: {r: training-loss floor}}."""
    runs = seeded_sweeps("lora_r", ranks, seeds, profile=profile, data=data, progress=progress,
                         desc=f"capacity: r = {', '.join(map(str, ranks))} at alpha {alpha} x {len(seeds)} seeds",
                         num_epochs=epochs, lora_alpha=alpha, learning_rate=learning_rate)
    return {seed: {r: training_floor(result) for r, result in zip(ranks, s.results, strict=True)}
            for seed, s in runs.items()}


def alpha_tradeoff(r: int, alpha: int, learning_rate: float, *, profile: Profile, data, steps: int, batch_size: int,
                   seeds=(0, 1, 2), progress: bool = True) -> dict[str, dict[int, float]]:
    """Is alpha a learning-rate multiplier? At rank r: (alpha, lr), (alpha/2, lr) and (alpha/2, 2 lr), each on every
    seed, the same steps. {arm: {seed: final validation loss}}."""
    arms = {"alpha, lr": (alpha, learning_rate), "alpha/2, lr": (alpha // 2, learning_rate),
            "alpha/2, 2lr": (alpha // 2, 2 * learning_rate)}
    out = {arm: {} for arm in arms}
    with tqdm(total=len(arms) * len(seeds) * steps, desc=f"alpha against the rate at r = {r}",
              disable=not progress) as bar:
        for seed in seeds:
            for arm, (a, lr) in arms.items():
                s = sweep("lora_alpha", [a], "lora", profile=profile, data=data, bar=bar, seed=seed, lora_r=r,
                          learning_rate=lr, max_steps=steps, batch_size=batch_size)
                out[arm][seed] = s.final()[0]
    return out


def warmup_range(rates, warmup_steps: int, *, profile: Profile, data, steps: int, seeds=(0, 1, 2),
                 progress: bool = True) -> dict[str, dict[int, SweepResult]]:
    """What warmup is for: the peak rates that still train stably, with and without it. Per arm ("none": no warmup;
    "warmup": `warmup_steps` of linear warmup) and seed, one LoRA run of `steps` steps per peak rate, everything else
    the same (a seed: the same data order in both arms). {arm: {seed: SweepResult over the rates}}."""
    return {arm: seeded_sweeps("learning_rate", rates, seeds, profile=profile, data=data, progress=progress,
                               desc=f"warmup: {arm}, {len(rates)} peak rates x {len(seeds)} seeds", max_steps=steps,
                               warmup_steps=warm)
            for arm, warm in (("none", 0), ("warmup", warmup_steps))}


def matched_placements(model: str, r: int) -> dict[str, tuple]:
    """Where the adapters go, each with about the trainable parameters of all-linear adapters at rank r (at the same r
    all-linear simply trains more: 2.65x attention-only's on SmolLM2). {name: (target_modules, rank)} for all-linear,
    attention-only and MLP-only; the rank of the last two is the one that matches the parameters."""
    shape = model_shape(model)
    total = lora_params(shape, r, "all-linear")
    return {"all-linear": ("all-linear", r)} | {
        name: (targets, max(1, round(total / lora_params(shape, 1, targets))))
        for name, targets in (("attention", ATTENTION), ("MLP", MLP))}


def placement_runs(placements: dict, rates, seeds, *, profile: Profile, data, steps: int, batch_size: int,
                   progress: bool = True) -> dict[str, dict]:
    """Each placement at its own best rate, on each seed: the first seed trains every rate, the others the rate it
    found best (LoRA Without Regret compares placements each at its optimum: a placement with more or larger
    matrices may want another rate). placements: matched_placements'. {name: {"rank", "rate", "params", "grid":
    {rate: validation loss on the first seed}, "losses": {seed: final validation loss at the best rate}}}."""
    first, *others = seeds
    out = {}
    with tqdm(total=len(placements) * (len(rates) + len(others)) * steps, disable=not progress,
              desc=f"placements at matched parameters: {len(rates)} rates, then {len(seeds)} seeds") as bar:
        for name, (targets, r) in placements.items():
            settings = dict(profile=profile, data=data, bar=bar, lora_r=r, target_modules=targets, max_steps=steps,
                            batch_size=batch_size)
            grid = sweep("learning_rate", rates, "lora", seed=first, **settings)
            best = grid.best()
            losses = {first: grid.final()[grid.values.index(best)]}
            losses |= {seed: sweep("learning_rate", [best], "lora", seed=seed, **settings).final()[0]
                       for seed in others}
            out[name] = {"rank": r, "rate": best, "params": grid.results[0].trainable_params,
                         "grid": dict(zip(grid.values, grid.final(), strict=True)), "losses": losses}
    return out


def u_minimum(rates, losses) -> float:
    """Where a U-curve bottoms out, finer than its grid: the vertex of the parabola through the lowest point and its
    two neighbours, log(loss) against log10(rate) (a sweep's best grid point is only as fine as the grid). nan when
    the lowest point is at an end of the rates (the minimum is not bracketed) or a neighbour is not finite."""
    points = [(math.log10(r), math.log(v)) if math.isfinite(v) and v > 0 else (math.log10(r), math.nan)
              for r, v in sorted(zip(rates, losses, strict=True))]
    finite = [y for _, y in points if math.isfinite(y)]
    if not finite:
        return math.nan
    i = next(k for k, (_, y) in enumerate(points) if y == min(finite))
    if i in (0, len(points) - 1) or not all(math.isfinite(points[k][1]) for k in (i - 1, i + 1)):
        return math.nan
    (x0, y0), (x1, y1), (x2, y2) = points[i - 1:i + 2]
    curvature = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)  # > 0: y1 is strictly the lowest
    if curvature <= 0:  # a flat bottom (ties): no vertex to read
        return math.nan
    slope = (y1 - y0) / (x1 - x0) - curvature * (x1 + x0)  # y = curvature x^2 + slope x + c
    return 10 ** (-slope / (2 * curvature))


def lr_optima(sweeps: dict, seeds, *, profile: Profile, data, progress: bool = True) -> dict:
    """The optimum learning rate of each learning-rate sweep on each seed, for the noise rule (sweeps: {label:
    SweepResult}, e.g. one per method or per rank). The grid sweep (its own seed) places the best grid rate; every
    other seed trains that rate and its two grid neighbours with the sweep's other settings; each seed's optimum is
    the u_minimum of its three final validation losses.
    {label: {"rates": the three rates, "losses": {seed: three losses}, "optima": {seed: rate or nan}}}."""
    out = {}
    for label, grid in sweeps.items():
        finals = dict(zip(grid.values, grid.final(), strict=True))
        rates = sorted(finals)
        i = rates.index(grid.best())
        three = rates[max(0, i - 1):i + 2]
        losses = {grid.fixed["seed"]: [finals[r] for r in three]}
        others = [s for s in seeds if s not in losses]
        if len(three) == 3 and others:  # at the grid's end nothing is bracketed: more seeds cannot change that
            fixed = {k: v for k, v in grid.fixed.items() if k != "seed"}  # the grid's settings, as used
            runs = seeded_sweeps("learning_rate", three, others, grid.method, profile=profile, data=data,
                                 progress=progress, desc=f"{label}: rates {', '.join(f'{r:g}' for r in three)} x "
                                                         f"{len(others)} more seeds", **fixed)
            losses |= {seed: s.final() for seed, s in runs.items()}
        out[label] = {"rates": three, "losses": losses,
                       "optima": {seed: u_minimum(three, v) for seed, v in sorted(losses.items())}}  # nan unbracketed
    return out


def _StepBar(bar):
    """A TrainerCallback that advances the sweep's one progress bar by a step and shows the last loss."""

    class StepBar(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                bar.set_postfix_str(f"{bar.postfix.split(',')[0] if bar.postfix else ''}, loss {logs['loss']:.3f}")

    return StepBar()


def rise_share(losses: list[float]) -> float:
    """Share of steps on which the training loss went up (0 for a steady fall; ~0.5 for noise around a level)."""
    if len(losses) < 2:
        return 0.0
    return sum(b > a for a, b in zip(losses, losses[1:])) / (len(losses) - 1)
