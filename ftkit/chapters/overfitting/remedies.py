"""Chapter 3's remedies: each row of the scoreboard is the overfitting baseline with one thing changed (a
hyperparameter, the data, or early stopping), declared once in REMEDIES, in one dict of changes per remedy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ftkit.chapters.overfitting.sizes import setup_of
from ftkit.core.data import load_course_dataset
from ftkit.core.hparams import NAMES, Hyperparameters, resolve
from ftkit.core.profiles import Profile, get_profile

# What a remedy can change besides the Hyperparameters fields: the training data, and early stopping.
DATA_CHANGES = ("templates_per_record", "noise", "n_train_factor")  # load_course_dataset's, n_train as a multiple
PATIENCE = "early_stopping_patience"  # evaluations without improvement before stopping; the best step is restored


@dataclass(frozen=True)
class Remedy:
    """One row of the scoreboard: the baseline with `changes` applied."""

    strategy: str  # which of the theory's four strategies (section 3) it tests
    changes: dict = field(default_factory=dict)  # {name: value}: Hyperparameters fields, DATA_CHANGES or PATIENCE
    claim: str = ""  # the CLAIMS.md id its verdict speaks to

    def __post_init__(self):
        unknown = sorted(set(self.changes) - {*NAMES, *DATA_CHANGES, PATIENCE})
        if unknown:
            raise ValueError(f"A remedy can change a hyperparameter ({', '.join(NAMES)}), the data "
                             f"({', '.join(DATA_CHANGES)}) or {PATIENCE}, not {', '.join(unknown)}")

    @property
    def hp(self) -> dict:
        return {k: v for k, v in self.changes.items() if k in NAMES}

    @property
    def data(self) -> dict:
        return {k: v for k, v in self.changes.items() if k in DATA_CHANGES}

    @property
    def patience(self) -> int | None:
        return self.changes.get(PATIENCE)

    @property
    def setting(self) -> str:
        return describe(self.changes)


REMEDIES = {
    "baseline": Remedy("none: the overfitting setup"),
    "early stopping": Remedy("1. early stopping", {PATIENCE: 3}, claim="3.early-stopping"),
    # A sweep of lambda where decay can matter: at lr 2e-3 for a few dozen steps the usual 0.01-0.1 shrink a weight by
    # well under 1 % (3.3 computes it: inert, not trained); 1 by a few %, 10 by ~20 %.
    "weight decay 1": Remedy("2. regularization", {"weight_decay": 1.0}, claim="3.weight-decay"),
    "weight decay 10": Remedy("2. regularization", {"weight_decay": 10.0}, claim="3.weight-decay"),
    "lora dropout": Remedy("2. regularization", {"lora_dropout": 0.1}, claim="3.dropout"),
    "paraphrases": Remedy("3. more data / augmentation", {"templates_per_record": 4}, claim="3.augmentation"),
    "input noise": Remedy("3. more data / augmentation", {"noise": 0.5}, claim="3.augmentation"),
    "4x records": Remedy("3. more data / augmentation", {"n_train_factor": 4}, claim="3.more-data"),
    # alpha kept at the baseline's 128 (not 2r): under Adam the adapter's step grows with alpha, so alpha = 2r would
    # also make the step 8x smaller (chapter 2, 2.alpha-influence); fixed alpha changes the capacity alone.
    "lower rank": Remedy("4. smaller rank / learning rate", {"lora_r": 8, "lora_alpha": 128}, claim="3.lower-rank"),
    "lower LR": Remedy("4. smaller rank / learning rate", {"learning_rate": 2e-4}, claim="3.lower-lr"),
}


def remedy_of(name: str) -> Remedy:
    if name not in REMEDIES:
        raise ValueError(f"Unknown remedy {name!r}: choose one of {', '.join(REMEDIES)}")
    return REMEDIES[name]


def describe(changes: dict) -> str:
    """What a row changes, in a few words: 'weight_decay=0.1', 'templates_per_record=4', 'patience 3'."""
    parts = [f"{k}={v}" for k, v in changes.items() if k not in ("n_train_factor", PATIENCE)]
    if "n_train_factor" in changes:
        parts.append(f"{changes['n_train_factor']}x the records")
    if PATIENCE in changes:
        parts.append(f"patience {changes[PATIENCE]}")
    return ", ".join(parts) or "—"


def overfit_data(profile: Profile | None = None, remedy: str = "baseline"):
    """The course dataset for one row: few training records, a known share of them with a wrong label
    (Setup.label_noise); validation, test and held-out rows, n_eval each. Every row covers all eight training phrasings
    (cover_templates), so validation and test are new people in phrasings every row trained on, and a gain is never a
    phrasing one row saw and the baseline did not. Changing n_train, templates or noise never changes the validation,
    test or held-out rows (ftkit.data draws them first)."""
    setup, data = setup_of(profile), dict(remedy_of(remedy).data)
    n_train = setup.n_train * data.pop("n_train_factor", 1)
    return load_course_dataset(n_train=n_train, n_validation=setup.n_eval, n_test=setup.n_eval,
                               n_heldout=setup.n_eval, seed=0, cover_templates=True, label_noise=setup.label_noise,
                               **data)


def hyperparameters_of(remedy: str, profile: Profile | None = None, seed: int | None = None) -> Hyperparameters:
    """The settings one row trains with, resolved once: the course's LoRA defaults at the baseline's sizes (rank,
    rate, schedule, steps, batch), the remedy's hyperparameter changes, and the seed (default: the profile's first)."""
    profile = profile or get_profile()
    setup = setup_of(profile)
    baseline = {"learning_rate": setup.learning_rate, "lr_scheduler": setup.lr_scheduler, "lora_r": setup.lora_r,
                "max_steps": setup.steps, "batch_size": setup.batch_size,
                "seed": setup.seeds[0] if seed is None else seed}
    return resolve("lora", None, profile, baseline | remedy_of(remedy).hp, caller=f"remedy {remedy!r}")


def settings_of(remedy: str, profile: Profile | None = None, model: str | None = None, seed: int | None = None
                ) -> dict:
    """Everything that decides a row's numbers: profile, model, sizes, hyperparameters, the remedy's changes."""
    profile = profile or get_profile()
    return {"profile": profile.as_dict(), "model": model or profile.model, "setup": asdict(setup_of(profile)),
            "hp": hyperparameters_of(remedy, profile, seed).as_dict(), "changes": remedy_of(remedy).changes}


def profile_remedies(names=None, profile: Profile | None = None) -> list[str]:
    """The remedies of `names` (default: all of REMEDIES) that this profile trains, in order (ci trains a few)."""
    chosen = setup_of(profile).remedies
    for name in names or REMEDIES:
        remedy_of(name)
    return [n for n in (names or REMEDIES) if chosen is None or n in chosen]
