"""Chapter 3's rows: one remedy trained and measured (a Row), kept as JSON and read back when measured already.

Used in notebooks/03_overfitting/: `row = ftkit.overfitting.overfit_run("weight decay", profile)`,
`rows = ftkit.overfitting.overfit_rows(names, profile)`.

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

from ftkit.chapters.overfitting.remedies import overfit_data, profile_remedies, settings_of
from ftkit.chapters.overfitting.sizes import setup_of
from ftkit.core.data import parse_answer
from ftkit.core.hparams import Hyperparameters
from ftkit.core.models import load_tokenizer
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.runtime import drive_dir, in_colab, mount_drive
from ftkit.core.train import eval_loss, evaluate_task, run_experiment

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

    from ftkit.chapters.overfitting import remedies, sizes
    from ftkit.core import builtin, data, hparams, models, train

    code = "".join(Path(m.__file__).read_text() for m in (data, hparams, builtin, models, train, sizes, remedies))
    code += Path(__file__).read_text()
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

    if row.result is None or row.result.trained_model is None:
        raise ValueError("This row has no model: train it with ftkit.overfit_run(..., keep_model=True).")
    hp = Hyperparameters(**{k: v for k, v in row.result.hyperparameters.items() if k != "precision"})
    return eval_loss(row.result.trained_model, load_tokenizer(row.result.model), overfit_data(profile, row.remedy),
                     profile or get_profile(), hp)


def overfit_rows(remedies=None, profile: Profile | None = None, *, progress: bool = True) -> dict[str, list[Row]]:
    """Each remedy of `remedies` (default: all of REMEDIES) that the profile trains, for every seed of the profile:
    {remedy: [Row per seed]}."""
    profile = profile or get_profile()
    return {name: [overfit_run(name, profile, seed, progress=progress) for seed in setup_of(profile).seeds]
            for name in profile_remedies(remedies, profile)}


# --- early stopping on a logged curve -------------------------------------------------------------


# --- the scoreboard -------------------------------------------------------------------------------


# --- verdicts: (holds, detail) from measured numbers; notebooks print them with ftkit.verdict ------------------


