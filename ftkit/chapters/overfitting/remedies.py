"""Chapter 3's remedies: each row of the scoreboard is the overfitting baseline with one thing changed (a
hyperparameter, the data, or early stopping), declared once in REMEDIES."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ftkit.chapters.overfitting.sizes import setup_of
from ftkit.core.data import load_course_dataset
from ftkit.core.profiles import Profile, get_profile


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


def profile_remedies(names=None, profile: Profile | None = None) -> list[str]:
    """The remedies of `names` (default: all of REMEDIES) that this profile trains, in order (ci trains a few)."""
    chosen = setup_of(profile).remedies
    for name in names or REMEDIES:
        remedy_of(name)
    return [n for n in (names or REMEDIES) if chosen is None or n in chosen]
