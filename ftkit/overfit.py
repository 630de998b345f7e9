"""Chapter 3: overfitting caused on purpose, four remedies measured against it, and one scoreboard.

Used in notebooks/03_overfitting/: `row = ftkit.overfit_run("weight decay", profile)`, then
`ftkit.scoreboard_table(rows)`, `ftkit.plot_scoreboard(rows)` and the verdict helpers below.

Every remedy is one entry of REMEDIES: the overfitting baseline with one thing changed. A row is trained once per
(remedy, seed, profile, settings, library versions, code) and kept as JSON in the run's output folder (outputs/overfit
beside the notebook, see rows_dir), so each notebook trains only its own remedies and the scoreboard reads the rows
the chapter already measured in this run (and trains the ones missing, so every notebook also runs alone).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import TRAIN_TEMPLATES, load_course_dataset, parse_answer
from .models import forward_autocast, load_tokenizer
from .plots import _axes
from .profiles import Profile, get_profile
from .train import eval_loss, evaluate_task, run_experiment


@dataclass(frozen=True)
class Setup:
    """The overfitting baseline at one profile's sizes: few records, many epochs, a large rank and rate."""

    n_train: int  # training records: scarce, so that memorising them is possible
    n_eval: int  # validation rows and held-out-phrasing rows, each
    steps: int  # optimizer steps of every row (epochs = steps x batch / n_train)
    eval_every: int  # steps between validation losses (the curve early stopping reads)
    seeds: tuple  # training seeds per row (init of the adapters, batch order, dropout masks)
    remedies: tuple | None = None  # the rows this profile trains (None: every entry of REMEDIES)
    batch_size: int = 4
    lora_r: int = 64  # a large adapter: capacity to memorise
    learning_rate: float = 2e-3  # twice the course's LoRA default: big steps towards the training sentences
    lr_scheduler: str = "cosine"  # constant keeps the steps big to the end: overfitting shows in fewer steps


SETUPS = {
    # 8 records x 5 epochs at a constant rate; validation after every step on 8 rows (measured on 2 busy cores: lowest
    # at step 6, then +100 % by step 10). CI's budget (~3 min for the chapter) buys one seed and the baseline plus one
    # remedy per strategy.
    "ci": Setup(n_train=8, n_eval=8, steps=10, eval_every=1, seeds=(0,), lr_scheduler="constant",
                remedies=("baseline", "early stopping", "weight decay", "4x records", "lower rank")),
    # 12 epochs, 32 validation rows; every remedy, and two seeds per row show how much of a difference is noise (about
    # half the time of 48 steps). Cosine, not constant: 24 steps at a constant 2e-3 collapsed the model at the end
    # (validation loss 0.24 -> 1.19 at step 24, repeated keys, 0 % exact match even on the training sentences).
    "cpu": Setup(n_train=8, n_eval=32, steps=24, eval_every=2, seeds=(0, 1)),
    "gpu": Setup(n_train=8, n_eval=64, steps=64, eval_every=4, seeds=(0, 1)),
    "t4": Setup(n_train=8, n_eval=64, steps=64, eval_every=4, seeds=(0, 1)),
}


@dataclass(frozen=True)
class Remedy:
    """One row of the scoreboard: the baseline with some hyperparameters, data settings or early stopping changed."""

    strategy: str  # which of the theory's four strategies (section 3) it tests
    hp: dict = field(default_factory=dict)  # Hyperparameters fields changed
    data: dict = field(default_factory=dict)  # load_course_dataset arguments changed
    patience: int | None = None  # early stopping on validation loss, best checkpoint restored
    claim: str = ""  # the CLAIMS.md id its verdict speaks to


REMEDIES = {
    "baseline": Remedy("none: the overfitting setup"),
    "early stopping": Remedy("1. early stopping", patience=3, claim="3.early-stopping"),
    "weight decay": Remedy("2. regularization", hp={"weight_decay": 0.1}, claim="3.weight-decay"),
    "lora dropout": Remedy("2. regularization", hp={"lora_dropout": 0.1}, claim="3.dropout"),
    "decay + dropout": Remedy("2. regularization", hp={"weight_decay": 0.1, "lora_dropout": 0.1}, claim="3.dropout"),
    "paraphrases": Remedy("3. more data / augmentation", data={"templates_per_record": 4}, claim="3.augmentation"),
    "input noise": Remedy("3. more data / augmentation", data={"noise": 0.5}, claim="3.augmentation"),
    "4x records": Remedy("3. more data / augmentation", data={"n_train": 4}, claim="3.more-data"),  # x n_train
    "lower rank": Remedy("4. smaller rank / learning rate", hp={"lora_r": 8}, claim="3.lower-rank"),
    "lower LR": Remedy("4. smaller rank / learning rate", hp={"learning_rate": 2e-4}, claim="3.lower-lr"),
}


def setup_of(profile: Profile | None = None) -> Setup:
    """The baseline's sizes for a profile."""
    return SETUPS[(profile or get_profile()).name]


def remedy_of(name: str) -> Remedy:
    if name not in REMEDIES:
        raise ValueError(f"Unknown remedy {name!r}: choose one of {', '.join(REMEDIES)}")
    return REMEDIES[name]


def overfit_data(profile: Profile | None = None, remedy: str = "baseline"):
    """The course dataset for one row: few training records; validation and held-out phrasings of n_eval rows each.
    Changing n_train, templates or noise never changes the validation or held-out rows (ftkit.data draws them first)."""
    setup, data = setup_of(profile), dict(remedy_of(remedy).data)
    n_train = setup.n_train * data.pop("n_train", 1)
    return load_course_dataset(n_train=n_train, n_validation=setup.n_eval, n_test=setup.n_eval,
                               n_heldout=setup.n_eval, seed=0, **data)


def settings_of(remedy: str, profile: Profile | None = None, model: str | None = None) -> dict:
    """Everything that decides a row's numbers: profile, model, sizes, hyperparameters, data, early stopping."""
    profile = profile or get_profile()
    setup, r = setup_of(profile), remedy_of(remedy)
    hp = {"learning_rate": setup.learning_rate, "lr_scheduler": setup.lr_scheduler, "lora_r": setup.lora_r,
          "max_steps": setup.steps, "batch_size": setup.batch_size} | r.hp
    return {"profile": profile.as_dict(), "model": model or profile.model, "setup": asdict(setup), "hp": hp,
            "data": r.data, "patience": r.patience}


def describe(remedy: str) -> str:
    """What a row changes, in a few words: 'weight_decay=0.1', 'templates_per_record=4', 'patience 3'."""
    r = remedy_of(remedy)
    parts = [f"{k}={v}" for k, v in {**r.hp, **r.data}.items()]
    if "n_train" in r.data:
        parts = [p for p in parts if not p.startswith("n_train")] + [f"{r.data['n_train']}x the records"]
    if r.patience is not None:
        parts.append(f"patience {r.patience}")
    return ", ".join(parts) or "—"


# --- one row of the scoreboard ------------------------------------------------------------------


@dataclass
class Row:
    """What one remedy run measured (JSON-serialisable; `result` holds the Result when the model was kept)."""

    remedy: str
    seed: int
    history: list  # one dict per logged step, as Result.history
    seconds: float  # the training call, validation included
    steps: int  # optimizer steps actually run (fewer than planned when early stopping stopped)
    planned_steps: int
    restored_step: int | None  # early stopping: the step whose weights were restored
    heldout: dict  # scores on held-out phrasings of new people: exact_match, field_accuracy, ...
    answers: list  # the generated answers on the held-out rows
    leaks: list  # wrong values in those answers copied from the training records (see find_leaks)
    adapter: dict  # norms of the trained adapter (see adapter_norms)
    trainable_params: int = 0
    measured_at: str = ""
    from_cache: bool = False  # read back from rows_dir() (measured earlier in this run), not trained by this call
    result: object = field(default=None, repr=False)  # the Result with its model, when keep_model=True

    def losses(self, kind: str = "train_loss") -> tuple[list[int], list[float]]:
        rows = [h for h in self.history if kind in h]
        return [h["step"] for h in rows], [h[kind] for h in rows]

    @property
    def best_step(self) -> int:
        """The step of the lowest validation loss."""
        steps, values = self.losses("eval_loss")
        return steps[values.index(min(values))]

    @property
    def best_val(self) -> float:
        return min(self.losses("eval_loss")[1])

    @property
    def kept_step(self) -> int:
        """The step whose weights the run ends with: the restored one with early stopping, else the last."""
        return self.restored_step if self.restored_step is not None else self.steps

    @property
    def kept_val(self) -> float:
        """Validation loss of the model the run ends with."""
        steps, values = self.losses("eval_loss")
        return values[steps.index(self.kept_step)] if self.kept_step in steps else values[-1]

    @property
    def kept_train(self) -> float:
        """Training loss around the kept step: the mean over the eval interval that ends there (one batch is noisy)."""
        every = max(self.eval_every, 1)
        steps, values = self.losses("train_loss")
        window = [v for s, v in zip(steps, values, strict=True) if self.kept_step - every < s <= self.kept_step]
        return statistics.fmean(window) if window else math.nan

    @property
    def eval_every(self) -> int:
        steps = self.losses("eval_loss")[0]
        return steps[1] - steps[0] if len(steps) > 1 else self.planned_steps

    @property
    def gap(self) -> float:
        """Validation minus training loss of the kept model: how much better it does on what it trained on."""
        return self.kept_val - self.kept_train

    @property
    def rise(self) -> float:
        """How far the last validation loss is above the lowest one, relative (0.3 = 30 % above)."""
        return self.losses("eval_loss")[1][-1] / self.best_val - 1

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("result", "from_cache")}


def adapter_norms(model) -> dict:
    """Frobenius norms of a peft LoRA model's adapters: |A|, |B| (all layers together) and |delta W| = the distance
    of the adapted weights from the base weights, sqrt(sum over layers of |scaling * B A|^2)."""
    a2 = b2 = d2 = 0.0
    for module in model.modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        A = module.lora_A["default"].weight.detach().float()
        B = module.lora_B["default"].weight.detach().float()
        a2 += A.pow(2).sum().item()
        b2 += B.pow(2).sum().item()
        d2 += (module.scaling["default"] * (B @ A)).pow(2).sum().item()
    return {"A": math.sqrt(a2), "B": math.sqrt(b2), "delta_W": math.sqrt(d2)}


def find_leaks(answers: list[str], dataset, train_dataset) -> list[dict]:
    """Wrong values in answers to new sentences that were copied from the training records (memorised, not read).

    A leak: the parsed answer gives a field a wrong value that is a training record's value of that field and does
    not appear in the sentence it was asked about. Returns one dict per leak: sentence, field, said, truth."""
    seen = {}
    for answer in train_dataset["answer"]:
        for key, value in json.loads(answer).items():
            seen.setdefault(key, set()).add(value)
    leaks = []
    for answer, row in zip(answers, dataset, strict=True):
        pred, truth = parse_answer(answer), json.loads(row["answer"])
        sentence = row["messages"][0]["content"].split("\n", 1)[-1]
        for key, value in (pred or {}).items():
            if key in truth and value != truth[key] and value in seen.get(key, ()) and str(value) not in sentence:
                leaks.append({"sentence": sentence, "field": key, "said": value, "truth": truth[key]})
    return leaks


def _digest(settings: dict) -> str:
    """A key for a row's settings, the library versions and ftkit's training code: any change trains it again."""
    import peft
    import transformers
    import trl

    here = Path(__file__).resolve().parent
    code = "".join((here / f).read_text() for f in ("data.py", "hparams.py", "models.py", "overfit.py", "train.py"))
    versions = [torch.__version__, transformers.__version__, peft.__version__, trl.__version__]
    text = json.dumps([settings, versions, hashlib.sha256(code.encode()).hexdigest()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


ROWS_ENV = "FTKIT_OVERFIT_ROWS"


def rows_dir() -> Path:
    """Where measured rows are kept: $FTKIT_OVERFIT_ROWS (on Colab, share_rows sets it to Google Drive), else
    outputs/overfit under the working folder (beside the notebook: a run's output, ignored by git). Delete it to
    measure everything again."""
    return Path(os.environ.get(ROWS_ENV) or Path("outputs") / "overfit")


def share_rows() -> str:
    """Set up where the chapter's notebooks keep and find their rows, and say where. On Colab, Google Drive (mounted
    once, asking for access): a notebook opened from its badge gets a fresh runtime whose disk the others never see, so
    without Drive 3.3-3.6 would train again every row 3.1-3.4 measured (63 runs instead of 20 in the t4 profile).
    Elsewhere, and when Drive is refused, rows_dir() as it is. Used in every chapter-3 notebook's setup cell."""
    from .colab import drive_dir, mount_drive
    from .doctor import in_colab

    if in_colab() and ROWS_ENV not in os.environ and mount_drive():
        os.environ[ROWS_ENV] = str(drive_dir("overfit-rows"))
    return f"measured rows are kept in {rows_dir()}: a row measured once with the same settings is read back"


def row_path(remedy: str, seed: int, profile: Profile | None = None, model: str | None = None) -> Path:
    """The file of one row: one per remedy, seed and settings (a change of settings or code gives a new file)."""
    slug = "".join(c if c.isalnum() else "-" for c in remedy)
    return rows_dir() / f"{slug}-seed{seed}-{_digest(settings_of(remedy, profile, model) | {'seed': seed})}.json"


def overfit_run(remedy: str = "baseline", profile: Profile | None = None, seed: int | None = None, *,
                keep_model: bool = False, reuse: bool = True, callbacks=(), progress: bool = True,
                model: str | None = None) -> Row:
    """Train one row of the scoreboard (the baseline with `remedy` applied) and measure it.

    With reuse=True (and keep_model=False) a row already measured with the same settings, seed, library versions and
    ftkit code is read back instead of trained again, and says when it was measured (Row.measured_at).
    keep_model=True always trains, and keeps the Result with its model in Row.result."""
    profile = profile or get_profile()
    setup = setup_of(profile)
    seed = setup.seeds[0] if seed is None else seed
    path = row_path(remedy, seed, profile, model)
    if reuse and not keep_model and path.is_file():
        return Row(**json.loads(path.read_text()), from_cache=True)
    settings, data = settings_of(remedy, profile, model), overfit_data(profile, remedy)
    result = run_experiment("lora", profile=profile, model=settings["model"], data=data, eval_every=setup.eval_every,
                            seed=seed,
                            early_stopping_patience=settings["patience"], save=False, score_splits=(),
                            callbacks=callbacks, progress=progress, **settings["hp"])
    net, tokenizer = result.trained_model, load_tokenizer(settings["model"])
    heldout, answers = evaluate_task(net, tokenizer, data["heldout"], batch_size=profile.gen_batch_size,
                                     progress=progress)
    row = Row(remedy=remedy, seed=seed, history=result.history, seconds=result.wall_time_s,
              steps=max(h["step"] for h in result.history), planned_steps=setup.steps,
              restored_step=result.best_step, heldout=heldout, answers=answers,
              leaks=find_leaks(answers, data["heldout"], data["train"]), adapter=adapter_norms(net),
              trainable_params=result.trainable_params,
              measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")  # notebooks may run side by side: a reader never sees half
    tmp.write_text(json.dumps(row.as_dict(), indent=1))
    os.replace(tmp, path)
    if keep_model:
        row.result = result
    else:
        result.trained_model = None
    return row


def validation_loss(row: Row, profile: Profile | None = None) -> float:
    """Validation loss of the model a kept row holds now, computed as the trainer logs it (same rows, same batches)."""
    from .hparams import Hyperparameters

    if row.result is None or row.result.trained_model is None:
        raise ValueError("This row has no model: train it with ftkit.overfit_run(..., keep_model=True).")
    hp = Hyperparameters(**{k: v for k, v in row.result.hyperparameters.items() if k != "precision"})
    return eval_loss(row.result.trained_model, load_tokenizer(row.result.model), overfit_data(profile, row.remedy),
                     profile or get_profile(), hp)


def profile_remedies(names=None, profile: Profile | None = None) -> list[str]:
    """The remedies of `names` (default: all of REMEDIES) that this profile trains, in order (ci trains a few)."""
    chosen = setup_of(profile).remedies
    for name in names or REMEDIES:
        remedy_of(name)
    return [n for n in (names or REMEDIES) if chosen is None or n in chosen]


def overfit_rows(remedies=None, profile: Profile | None = None, *, progress: bool = True) -> dict[str, list[Row]]:
    """Each remedy of `remedies` (default: all of REMEDIES) that the profile trains, for every seed of the profile:
    {remedy: [Row per seed]}."""
    profile = profile or get_profile()
    return {name: [overfit_run(name, profile, seed, progress=progress) for seed in setup_of(profile).seeds]
            for name in profile_remedies(remedies, profile)}


class KeepBest:
    """A Trainer callback that copies the trainable weights whenever validation loss reaches a new low, so the model
    of the best step can be scored after the run went on to overfit (in memory: no checkpoint is written)."""

    def __init__(self):
        from transformers import TrainerCallback

        keeper = self

        class _Callback(TrainerCallback):
            def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
                loss = (metrics or {}).get("eval_loss")
                if loss is not None and loss < keeper.best_loss:
                    keeper.best_loss, keeper.step = loss, state.global_step
                    keeper.weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        self.callback, self.best_loss, self.step, self.weights = _Callback(), math.inf, None, {}

    def swap_in(self, model) -> dict:
        """Put the best step's weights into model; returns the weights it replaced (swap_in them to go back)."""
        params = dict(model.named_parameters())
        old = {n: params[n].detach().clone() for n in self.weights}
        load_weights(model, self.weights)
        return old


def load_weights(model, weights: dict) -> None:
    """Copy a {name: tensor} dict (from KeepBest.swap_in) back into the model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)


# --- early stopping on a logged curve -------------------------------------------------------------


def early_stop(losses: list[float], patience: int, threshold: float = 0.0) -> tuple[int | None, int]:
    """Where transformers' EarlyStoppingCallback stops on a validation curve: (index of the evaluation after which it
    stops or None if it never does, index of the best evaluation so far then, the one load_best_model_at_end keeps).

    Its rule: an evaluation counts as an improvement only if it is below the best so far by more than `threshold`;
    each evaluation without one adds 1 to a counter (an improvement resets it); training stops when it reaches
    `patience`."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1 evaluation, not {patience}")
    best, best_i, counter = math.inf, 0, 0
    for i, loss in enumerate(losses):
        if loss < best and abs(loss - best) > threshold:
            best, best_i, counter = loss, i, 0
        else:
            counter += 1
            if counter >= patience:
                return i, best_i
    return None, best_i


def per_example_losses(model, tokenizer, dataset) -> list[float]:
    """Mean cross-entropy on the answer tokens of each row (as validation loss counts them, one row at a time)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad(), forward_autocast(model):
        for row in dataset:
            prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
            ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
            n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            labels = ids.clone()
            labels[:, :n_prompt] = -100
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    model.train(was_training)
    return losses


# --- the scoreboard -------------------------------------------------------------------------------


def _mean(rows: list[Row], value) -> float:
    return statistics.fmean(value(r) for r in rows)


def summary(rows: dict[str, list[Row]]) -> dict[str, dict]:
    """Per remedy, the mean over seeds of each scoreboard column (and the spread of the best and kept validation
    losses between seeds: 0 with one seed)."""
    out = {}
    for name, rs in rows.items():
        vals, bests = [r.kept_val for r in rs], [r.best_val for r in rs]
        out[name] = {"best_val": statistics.fmean(bests), "best_val_spread": max(bests) - min(bests),
                     "kept_val": statistics.fmean(vals),
                     "kept_val_spread": max(vals) - min(vals), "gap": _mean(rs, lambda r: r.gap),
                     "heldout_em": _mean(rs, lambda r: r.heldout["exact_match"]),
                     "steps": _mean(rs, lambda r: r.steps), "seconds": _mean(rs, lambda r: r.seconds),
                     "leaks": _mean(rs, lambda r: len(r.leaks)), "seeds": len(rs)}
    return out


def ranking(rows: dict[str, list[Row]]) -> list[str]:
    """Remedies from the lowest validation loss of the kept model to the highest (mean over seeds)."""
    s = summary(rows)
    return sorted(s, key=lambda name: s[name]["kept_val"])


def scoreboard_table(rows: dict[str, list[Row]]) -> str:
    """The scoreboard as Markdown: one line per remedy, means over seeds (with the spread when there are several)."""
    s = summary(rows)
    head = ("| remedy | strategy | setting | best val loss | val loss, kept model | train/val gap | held-out exact "
            "match | leaked values | steps | seconds |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for name in rows:
        v = s[name]
        spread = f" ± {v['kept_val_spread'] / 2:.3f}" if v["seeds"] > 1 else ""
        lines.append(f"| {name} | {REMEDIES[name].strategy} | {describe(name)} | {v['best_val']:.3f} | "
                     f"{v['kept_val']:.3f}{spread} | {v['gap']:.3f} | {v['heldout_em']:.0%} | {v['leaks']:.1f} | "
                     f"{v['steps']:.0f} | {v['seconds']:.0f} |")
    return "\n".join(lines)


def plot_scoreboard(rows: dict[str, list[Row]], ax=None, title: str = "Validation loss of the model each remedy keeps"):
    """Horizontal bars: the kept model's validation loss per remedy (each seed a dot), the baseline's as a line."""
    ax = _axes(ax)
    s = summary(rows)
    names = list(rows)[::-1]
    ax.barh(names, [s[n]["kept_val"] for n in names], color=[f"C{i}" for i in range(len(names))], alpha=0.7)
    for i, n in enumerate(names):
        ax.plot([r.kept_val for r in rows[n]], [i] * len(rows[n]), "k.", ms=4)
    if "baseline" in s:
        ax.axvline(s["baseline"]["kept_val"], color="gray", ls="--", lw=1, label="baseline")
        ax.legend(fontsize=7)
    ax.set(xlabel="validation loss (lower is better)", title=title)
    return ax


# --- verdicts: (holds, detail) from measured numbers; notebooks print them with ftkit.verdict ------------------


def overfitting_verdict(best_val: float, last_val: float, last_train: float, train_em: float, heldout_em: float,
                        *, min_rise: float = 0.1) -> tuple[bool, str]:
    """3.overfitting: holds when training loss ends below the best validation loss, validation loss ends at least
    `min_rise` above its minimum, and the model scores better on its training sentences than on new ones."""
    rise = last_val / best_val - 1
    holds = last_train < best_val and rise >= min_rise and train_em > heldout_em
    detail = (f"training loss ended at {last_train:.4f} while validation loss rose from its minimum {best_val:.3f} "
              f"to {last_val:.3f} ({rise:+.0%}); exact match {train_em:.0%} on the training sentences, "
              f"{heldout_em:.0%} on new people in new phrasings")
    if not holds:
        detail += (f" — not the memorisation picture (it needs a rise of at least {min_rise:.0%} and a better score "
                   "on the training sentences)")
    return holds, detail


def early_stopping_verdict(stopped_step: int, planned_steps: int, restored_val: float, best_logged: float,
                           baseline_val: float, seconds: float, baseline_seconds: float,
                           *, rel: float = 1e-3) -> tuple[bool, str]:
    """3.early-stopping: holds when the run stopped before its last step, the model kept has the best logged
    validation loss (within `rel`), and that is lower than where the full run ended."""
    restored = math.isclose(restored_val, best_logged, rel_tol=rel)
    holds = stopped_step < planned_steps and restored and restored_val < baseline_val
    detail = (f"{time_saved(stopped_step, planned_steps, seconds, baseline_seconds)}; the model in memory has "
              f"validation loss {restored_val:.4f}, "
              f"the best logged was {best_logged:.4f} ({'the same model' if restored else 'NOT the best one'}), "
              f"against {baseline_val:.4f} at the end of the full run")
    return holds, detail


def time_saved(steps: int, planned_steps: int, seconds: float, baseline_seconds: float) -> str:
    """What early stopping saved, in steps and in seconds, said honestly when the seconds went the other way: to
    restore the best model the Trainer writes a checkpoint (adapter and optimizer state) at every evaluation."""
    text = f"stopped at step {steps} of {planned_steps} ({planned_steps - steps} steps saved)"
    if seconds < baseline_seconds:
        return text + f", {seconds:.0f} s against {baseline_seconds:.0f} s for the full run"
    return (text + f", but it took {seconds:.0f} s against the full run's {baseline_seconds:.0f} s: it writes a "
            "checkpoint at every evaluation to restore the best one, which costs more than the steps it saved here")


def penalty_verdict(first_loss_decay: float, first_loss_plain: float, penalty: float) -> tuple[bool, str]:
    """3.weight-decay-penalty: "adds a penalty to the loss". Before the first update, with the same seed and batch,
    a penalty would make the logged loss larger by `penalty` (lambda/2 |theta|^2). Holds when it is larger by at
    least half of that; AdamW's decoupled decay leaves the loss unchanged."""
    diff = first_loss_decay - first_loss_plain
    holds = diff >= penalty / 2
    detail = (f"first logged training loss with decay {first_loss_decay:.6f}, without {first_loss_plain:.6f} "
              f"(difference {diff:+.2g}); an L2 penalty on these weights would have added {penalty:.3g}")
    if not holds:
        detail += (". AdamW's decay is decoupled from the loss (Loshchilov & Hutter 2019): each step multiplies the "
                   "weights by (1 - lr x lambda) after the Adam update; on LoRA that shrinks A and B, pulling the "
                   "model towards the base model, not the weights towards zero")
    return holds, detail


def decay_shrink(row: Row, weight_decay: float) -> float:
    """How much decoupled weight decay alone shrinks an untouched weight over a run: 1 - prod_t (1 - lr_t x lambda)."""
    return 1 - math.prod(1 - lr * weight_decay for lr in row.losses("learning_rate")[1])


def why(name: str, rows: dict[str, list[Row]], *, margin: float = 0.05) -> str:
    """Why a remedy ended where it did against the baseline, from the two curves: how low it got (learns more that
    carries over, or less in these steps) and how far it rose from there (memorises less, or just the same). Weight
    decay too weak to move the weights is named as such: its difference from the baseline is then the run's noise."""
    s = summary(rows)
    base, mine = s["baseline"], rows[name]
    best, rise = s[name]["best_val"], statistics.fmean(r.rise for r in mine)
    base_rise = statistics.fmean(r.rise for r in rows["baseline"])
    if REMEDIES[name].patience is not None:
        return (f"it keeps the model of step {statistics.fmean(r.kept_step for r in mine):.0f}, before the curve rose "
                f"(the full run ends {base_rise:+.0%} above its minimum)")
    if too_weak_decay(name, rows, margin=margin):
        decay = REMEDIES[name].hp["weight_decay"]
        return (f"decoupled decay shrinks an untouched weight by only {decay_shrink(mine[0], decay):.1%} over these "
                f"{mine[0].planned_steps} steps, too little to change what the adapter memorises: the difference from "
                "the baseline is noise (the same seed, a slightly different and chaotic trajectory at this high rate)")
    spread = max(s[name]["best_val_spread"], base["best_val_spread"])
    if 0 < spread and abs(base["best_val"] - best) <= spread:
        level = (f"its lowest validation loss, {best:.3f}, is within the seeds' spread ({spread:.3f}) of the "
                 f"baseline's {base['best_val']:.3f}")
    elif best > base["best_val"] * (1 + margin):
        level = (f"its lowest validation loss, {best:.3f}, is above the baseline's {base['best_val']:.3f}: in "
                 f"{mine[0].planned_steps} steps it learns less")
    elif best < base["best_val"] * (1 - margin):
        level = (f"it gets lower than the baseline ever did ({best:.3f} against {base['best_val']:.3f}): more of what "
                 "it learns carries over to new people")
    else:
        level = f"it gets about as low as the baseline ({best:.3f} against {base['best_val']:.3f})"
    if rise < base_rise / 2:
        return level + f", and its curve rises {rise:+.0%} from its minimum against the baseline's {base_rise:+.0%}: " \
                       "it memorises less"
    return level + f", and its curve rises {rise:+.0%} from its minimum, like the baseline's {base_rise:+.0%}: it " \
                   "still memorises"


def too_weak_decay(name: str, rows: dict[str, list[Row]], *, margin: float = 0.05) -> bool:
    """True for a remedy that changes only weight decay, when decay alone shrinks a weight by less than `margin` over
    the run: too little to be the cause of any difference from the baseline."""
    remedy = REMEDIES[name]
    if set(remedy.hp) != {"weight_decay"} or remedy.data:
        return False
    return decay_shrink(rows[name][0], remedy.hp["weight_decay"]) < margin


def remedy_verdict(name: str, rows: dict[str, list[Row]], *, min_gain: float = 0.05) -> tuple[bool, str]:
    """Does a remedy help here? Holds when the validation loss of the model it keeps is at least `min_gain` (5 %)
    below the baseline's, by more than the spread between seeds (when there are several), and the remedy can be the
    cause (weight decay too weak to move the weights cannot). The detail adds held-out exact match and why()."""
    s = summary(rows)
    base, row = s["baseline"], s[name]
    change = row["kept_val"] / base["kept_val"] - 1
    noise = max(base["kept_val_spread"], row["kept_val_spread"])
    beyond_noise = base["kept_val"] - row["kept_val"] > noise
    weak = too_weak_decay(name, rows)
    holds = change <= -min_gain and beyond_noise and not weak
    detail = (f"{name} ({describe(name)}): validation loss of the kept model {row['kept_val']:.3f} against "
              f"{base['kept_val']:.3f} ({change:+.0%}), held-out exact match {row['heldout_em']:.0%} against "
              f"{base['heldout_em']:.0%}")
    if change > -min_gain:
        detail += f" — not {min_gain:.0%} better, so it does not help here"
    elif weak:
        detail += " — but not because of the decay"
    elif not beyond_noise:
        detail += f" — within the spread between seeds ({noise:.3f}), so not a measured help"
    return holds, detail + "; " + why(name, rows)


def template_overlap(data) -> set:
    """Phrasings (template ids) found both in the training split and the held-out split: must be empty."""
    train = set(data["train"]["template"])
    return (train & set(data["heldout"]["template"])) | {t for t in train if t >= len(TRAIN_TEMPLATES)}
