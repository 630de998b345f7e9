"""Chapter 3's rows: one remedy trained and measured (a Row), kept as JSON and read back when measured already.

Used in notebooks/03_overfitting/: `row = ftkit.overfitting.overfit_run("weight decay 10", profile)`,
`rows = ftkit.overfitting.overfit_rows(names, profile)`.

Every remedy is one entry of REMEDIES: the overfitting baseline with one thing changed. A row is trained once per
(remedy, seed, profile, settings, library versions, code) and kept as JSON in the run's output folder (outputs/overfit
beside the notebook, see rows_dir), so each notebook trains only its own remedies and the scoreboard reads the rows
the chapter already measured in this run (and trains the ones missing, so every notebook also runs alone).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from ftkit.chapters.overfitting.remedies import (
    describe,
    hyperparameters_of,
    overfit_data,
    profile_remedies,
    remedy_of,
    settings_of,
)
from ftkit.chapters.overfitting.sizes import setup_of
from ftkit.core.data import parse_answer, score
from ftkit.core.hparams import Hyperparameters
from ftkit.core import store
from ftkit.core.models import load_tokenizer
from ftkit.core.profiles import Profile, get_profile
from ftkit.core.generation import answer_logprobs, generate_answers, row_losses
from ftkit.core.train import Result, eval_loss, run_experiment

# --- one row of the scoreboard ------------------------------------------------------------------


@dataclass
class Row(Result):
    """One remedy's run: everything a Result holds (JSON-serialisable; trained_model only when kept), plus what the
    remedy changed and what chapter 3 measures of the trained model. The analysis reads a row, not REMEDIES."""

    remedy: str = ""
    strategy: str = ""  # which of the theory's four strategies it tests (Remedy.strategy)
    changes: dict = field(default_factory=dict)  # what differs from the baseline (Remedy.changes)
    claim: str = ""  # the CLAIMS.md id its verdict speaks to
    planned_steps: int = 0
    # Every row keeps the model of its lowest validation loss ("kept", the same selection for every remedy) and is
    # judged on rows that selection never saw: the test split (new people in the training phrasings) and held-out.
    per_row: dict = field(default_factory=dict)  # {split: {"kept"|"last": [each row's loss]}}: test, and train (the
    #   clean training rows: seen people); "kept" at the kept step, "last" at the last evaluation
    noise_margins: dict = field(default_factory=dict)  # {"kept"|"last": [log p(wrong label) - log p(true label)]} per
    #   training row with a wrong label: above 0, the model would rather write the noise it was trained on
    test: dict = field(default_factory=dict)  # scores of the kept model on the test split: exact_match, ...
    heldout: dict = field(default_factory=dict)  # scores of the kept model on held-out phrasings of new people
    answers: list = field(default_factory=list)  # the kept model's generated answers on the held-out rows
    leaks: list = field(default_factory=list)  # wrong values copied from the training records (see find_leaks)
    adapter: dict = field(default_factory=dict)  # norms of the trained adapter (see adapter_norms)
    measured_at: str = ""
    from_cache: bool = False  # read back from rows_dir() (measured earlier in this run), not trained by this call
    checkpoints: KeepCheckpoints | None = None  # with keep_model=True: the kept and last weights, in memory

    @property
    def seed(self) -> int:
        return self.hyperparameters["seed"]

    @property
    def setting(self) -> str:
        """What the row changes, in a few words ('weight_decay=0.1', 'patience 3')."""
        return describe(self.changes)

    @property
    def kept_step(self) -> int:
        """The step of the model the row is judged on: its lowest validation loss, for every remedy alike (early
        stopping restores the same one)."""
        return self.best_step

    @property
    def kept_val(self) -> float:
        """Validation loss of the kept model (the lowest logged)."""
        return self.best_val

    @property
    def test_loss(self) -> float:
        """Mean over the test rows of each row's loss, kept model: the number every remedy is decided on."""
        return statistics.fmean(self.per_row["test"]["kept"])

    @property
    def learned_noise(self) -> int:
        """Training rows with a wrong label whose wrong label the model at the end of the run would rather write than
        the true one: the noise it fitted in its steps (the kept checkpoint's depends on where validation was lowest)."""
        return sum(m > 0 for m in self.noise_margins["last"])

    def train_loss_at(self, step: int) -> float:
        """Training loss around a step: the mean over the eval interval that ends there (one batch is noisy)."""
        every = max(self.eval_every, 1)
        steps, values = self.losses("train_loss")
        window = [v for s, v in zip(steps, values, strict=True) if step - every < s <= step]
        return statistics.fmean(window) if window else math.nan

    @property
    def kept_train(self) -> float:
        """Training loss around the kept step."""
        return self.train_loss_at(self.kept_step)

    @property
    def last_train(self) -> float:
        """Training loss over the run's last eval interval."""
        return self.train_loss_at(self.steps)

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
        return {k: v for k, v in super().as_dict().items() if k not in ("from_cache", "checkpoints")}


class KeepCheckpoints(TrainerCallback):
    """At every evaluation, a copy in memory of the trainable weights (no checkpoint written): `last`, and `best`, the
    one of the lowest validation loss so far (the model every row is judged on)."""

    def __init__(self):
        self.best_loss, self.best, self.last = math.inf, {}, {}

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or model is None:
            return
        self.last = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        if loss < self.best_loss:
            self.best_loss, self.best = loss, self.last


@contextmanager
def loaded(model, weights: dict):
    """A block with `weights` ({name: tensor}) copied into the model's parameters, then the values it had back."""
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in weights}
    try:
        with torch.no_grad():
            for n, w in weights.items():
                params[n].copy_(w)
        yield model
    finally:
        with torch.no_grad():
            for n, w in before.items():
                params[n].copy_(w)


SPLITS_MEASURED = ("test", "train")


def measure_checkpoint(model, tokenizer, data, weights: dict) -> dict:
    """One checkpoint's per-row losses on the test rows (new people) and the clean training rows (seen people), and its
    noise margins: for each training row with a wrong label, log p(wrong label) - log p(true label), both as answers
    to the same sentence (above 0: the model would rather reproduce the noise)."""
    train = list(data["train"])
    corrupted = [r for r in train if r["corrupted"]]
    with loaded(model, weights):
        out = {"test": row_losses(model, tokenizer, list(data["test"])),
               "train": row_losses(model, tokenizer, [r for r in train if not r["corrupted"]])}
        true = [[r["messages"][0], {"role": "assistant", "content": r["clean_answer"]}] for r in corrupted]
        pairs = answer_logprobs(model, tokenizer, [r["messages"] for r in corrupted] + true)
    out["noise"] = [wrong - right for (wrong, _), (right, _) in zip(pairs[:len(corrupted)], pairs[len(corrupted):],
                                                                    strict=True)]
    return out


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


ROWS_ENV = "FTKIT_OVERFIT_ROWS"


def rows_dir() -> Path:
    """Where measured rows are kept: $FTKIT_OVERFIT_ROWS (on Colab, share_rows sets it to Google Drive), else
    outputs/overfit beside the notebook (ftkit.core.store)."""
    return store.runs_dir(ROWS_ENV, "overfit")


def share_rows() -> str:
    """Where the chapter's notebooks keep and find their rows, said in every chapter-3 notebook's setup cell: on Colab,
    Google Drive, so that 3.2-3.6 do not train again every row the notebooks before them measured (97 runs instead of
    30 in the t4 profile)."""
    return store.share_on_drive(ROWS_ENV, "overfit", "overfit-rows")


def row_path(remedy: str, seed: int, profile: Profile | None = None, model: str | None = None) -> Path:
    """The file of one row: one per remedy, seed and settings (a change of settings or code gives a new file)."""
    from ftkit.chapters.overfitting import remedies, rows, sizes

    key = store.digest(settings_of(remedy, profile, model, seed), (sizes, remedies, rows))
    return store.run_path(rows_dir(), remedy, seed, key)


def overfit_run(remedy: str = "baseline", profile: Profile | None = None, seed: int | None = None, *,
                keep_model: bool = False, reuse: bool = True, callbacks=(), progress: bool = True,
                model: str | None = None) -> Row:
    """Train one row of the scoreboard (the baseline with `remedy` applied) and measure it: at the kept checkpoint (its
    lowest validation loss, copied in memory by KeepCheckpoints) and at the last, each test row's and clean training
    row's loss and the wrong labels' log-odds; the kept model's answers on the test and held-out rows.

    With reuse=True (and keep_model=False) a row already measured with the same settings, seed, library versions and
    ftkit code is read back instead of trained again, and says when it was measured (Row.measured_at).
    keep_model=True always trains, and keeps the model in Row.trained_model."""
    profile = profile or get_profile()
    setup = setup_of(profile)
    seed = setup.seeds[0] if seed is None else seed
    path = row_path(remedy, seed, profile, model)
    kept_row = store.recall(path, Row, reuse=reuse and not keep_model)
    if kept_row is not None:
        return kept_row
    chosen, model, data = remedy_of(remedy), model or profile.model, overfit_data(profile, remedy)
    kept = KeepCheckpoints()
    result = run_experiment("lora", hyperparameters_of(remedy, profile, seed), profile=profile, model=model, data=data,
                            eval_every=setup.eval_every, early_stopping_patience=chosen.patience, save=False,
                            score_splits=(), callbacks=(kept, *callbacks), progress=progress)
    net, tokenizer = result.trained_model, load_tokenizer(model)
    measured = {when: measure_checkpoint(net, tokenizer, data, weights) for when, weights in
                (("last", kept.last), ("kept", kept.best))}
    judged = [*data["test"], *data["heldout"]]  # generated together: one pass of batches for both
    with loaded(net, kept.best):
        answers = generate_answers(net, tokenizer, [r["messages"][:-1] for r in judged],
                                   batch_size=profile.gen_batch_size, progress=progress)
    n_test = len(data["test"])
    test = score(answers[:n_test], list(data["test"]["answer"]))
    answers = answers[n_test:]
    heldout = score(answers, list(data["heldout"]["answer"]))
    with loaded(net, kept.last):
        adapter = adapter_norms(net)  # at the end of the run: what decay did over all of it
    row = Row(**result.as_dict(), remedy=remedy, strategy=chosen.strategy, changes=dict(chosen.changes),
              claim=chosen.claim, planned_steps=setup.steps,
              per_row={split: {when: m[split] for when, m in measured.items()} for split in SPLITS_MEASURED},
              noise_margins={when: m["noise"] for when, m in measured.items()}, test=test, heldout=heldout,
              answers=answers, leaks=find_leaks(answers, data["heldout"], data["train"]),
              adapter=adapter, measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    store.write(path, row.as_dict())
    row.trained_model, row.checkpoints = (net, kept) if keep_model else (None, None)
    return row


def validation_loss(row: Row, profile: Profile | None = None) -> float:
    """Validation loss of the model a kept row holds now, computed as the trainer logs it (same rows, same batches)."""

    if row.trained_model is None:
        raise ValueError("This row has no model: train it with ftkit.overfitting.overfit_run(..., keep_model=True).")
    return eval_loss(row.trained_model, load_tokenizer(row.model), overfit_data(profile, row.remedy),
                     profile or get_profile(), Hyperparameters(**row.hyperparameters))


def overfit_rows(remedies=None, profile: Profile | None = None, *, progress: bool = True) -> dict[str, list[Row]]:
    """Each remedy of `remedies` (default: all of REMEDIES) that the profile trains, for every seed of the profile:
    {remedy: [Row per seed]}."""
    profile = profile or get_profile()
    return {name: [overfit_run(name, profile, seed, progress=progress) for seed in setup_of(profile).seeds]
            for name in profile_remedies(remedies, profile)}


# --- early stopping on a logged curve -------------------------------------------------------------


# --- the scoreboard -------------------------------------------------------------------------------


# --- verdicts: (holds, detail) from measured numbers; notebooks print them with ftkit.verdict ------------------


