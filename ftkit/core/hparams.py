"""The training hyperparameters as one frozen object: defaults per profile and method, checks, and a sweep's `replace`.

Used by run_experiment (`ftkit.run_experiment("lora", hp)` or any field as a keyword override), the capstone's recipe
and chapter 2's sweeps: `replace(hp, learning_rate=3e-4)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

# Optimizers from bitsandbytes' CUDA kernels: they need a GPU.
GPU_ONLY_OPTIMIZERS = ("paged_adamw_8bit", "paged_adamw_32bit", "adamw_bnb_8bit", "adamw_8bit")
# The course's default learning rates. LoRA/QLoRA train few, freshly initialised weights and take a much larger
# step than full fine-tuning, which moves every pretrained weight (theory section 2: "usually higher than full FT",
# e.g. 2e-4 vs 1e-5). Full FT uses the text's 1e-5; LoRA/QLoRA 1e-3, 5x the text's 2e-4, because the chapters' runs
# are a dozen steps long and need a larger step to move at all (the capstone's 120-step run uses the text's 2e-4).
# So the methods run 100x apart, not 20x: chapter 2 measures each method's best rate.
DEFAULT_LEARNING_RATE = {"full": 1e-5, "lora": 1e-3, "qlora": 1e-3}
# Each method's best rate in chapter 2's learning-rate sweep (notebooks/02_hyperparameters/01, one rate per decade,
# measured 2026-11-29): LoRA 1e-3 in the ci and cpu profiles; full FT 1e-4 in ci (0.119 against 0.681 at 1e-3), and in
# cpu 1e-4 and 1e-3 both near the floor (0.0135 and 0.0100 after 13 steps of 8). Chapter 1's comparison also trains full
# FT at its own best rate, so that the text's 1e-5 alone does not make full fine-tuning look as if it learned less.
SWEPT_BEST_LEARNING_RATE = {"full": 1e-4, "lora": 1e-3, "qlora": 1e-3}
METHODS = tuple(DEFAULT_LEARNING_RATE)


@dataclass(frozen=True)
class Hyperparameters:
    """What a training run is set to learn with. Change one with `dataclasses.replace(hp, lora_r=8)`."""

    learning_rate: float  # step size of AdamW; too high diverges, too low barely moves (chapter 2 sweeps it)
    max_steps: int | None  # optimizer updates to run; None when num_epochs decides the length instead
    num_epochs: float | None  # passes over the training set (the theory's 1-3 for SFT); None when max_steps decides
    batch_size: int  # examples per forward/backward: larger = less noisy gradients, more activation memory
    gradient_accumulation_steps: int  # forwards summed per update: batch_size x this = the effective batch
    lora_r: int  # rank of the adapters' A (r x in) and B (out x r): capacity and trainable parameters grow with r
    lora_alpha: int | None  # adapter scale alpha / r; None means 2 r (the theory's rule of thumb)
    lora_dropout: float  # dropout on the adapters' input: a regulariser for long runs; 0 is a third faster on a CPU
    use_rslora: bool  # scale by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA: higher ranks keep learning)
    target_modules: str | tuple  # which linear layers get adapters: "all-linear" (QLoRA paper) or names like ("q_proj",)
    weight_decay: float  # AdamW's decoupled decay, a regulariser (chapter 3); 0 in short runs
    warmup_steps: int  # steps over which the rate rises linearly from 0: steadies the first, noisiest updates
    lr_scheduler: str  # how the rate falls after warmup: "cosine", "linear" or "constant"
    optim: str  # "adamw_torch" everywhere; "paged_adamw_8bit" (bitsandbytes, GPU only) saves optimizer memory
    gradient_checkpointing: bool  # recompute activations in backward: far less activation memory, ~30 % more time
    seed: int  # one seed for the adapters' init, the data order and dropout: same seed, same run
    # Variants chapter 5 measures against plain LoRA (each off by default: the course's runs are plain LoRA).
    completion_only_loss: bool = True  # loss on the answer only (TRL's default for prompt/completion rows); False: the
    #   whole conversation, prompt included (the other side of the guides' "train on completions only")
    use_dora: bool = False  # DoRA (Liu et al. 2024): the adapted weight split into a magnitude and a LoRA-updated
    #   direction (peft's use_dora); more work per step
    loraplus_lr_ratio: float | None = None  # LoRA+ (Hayou et al. 2024): B's learning rate = ratio x A's (peft's
    #   create_loraplus_optimizer; the paper's default 16); None: one rate for both
    neftune_noise_alpha: float | None = None  # NEFTune (Jain et al. 2023): uniform noise of scale alpha / sqrt(L d) on
    #   the input embeddings while training (transformers' Trainer); None: no noise
    padding_free: bool = False  # each batch flattened into one row with position ids restarting per example: no padding
    #   tokens, and attention kept inside each example (TRL's padding_free; TRL does not cut such rows at max_seq_len)

    def __post_init__(self):
        check(self)

    @property
    def alpha(self) -> int | float:
        """lora_alpha as used: the given value, or 2 r when None."""
        return lora_alpha_of(self.lora_r, self.lora_alpha)

    @property
    def scaling(self) -> float:
        """The factor on B A x: alpha / r, or alpha / sqrt(r) with use_rslora (what peft applies)."""
        return self.alpha / (math.sqrt(self.lora_r) if self.use_rslora else self.lora_r)

    def steps(self, n_train: int) -> int:
        """Optimizer updates this run makes on n_train examples (with num_epochs, as transformers' Trainer counts)."""
        if self.max_steps is not None:
            return self.max_steps
        batches = math.ceil(n_train / self.batch_size)
        updates_per_epoch = max(math.ceil(batches / self.gradient_accumulation_steps), 1)
        return math.ceil(self.num_epochs * updates_per_epoch)

    def as_dict(self) -> dict:
        """The values as used (lora_alpha resolved), for Result.hyperparameters and JSON."""
        values = asdict(self)
        values["lora_alpha"] = self.alpha
        if isinstance(values["target_modules"], list | tuple):
            values["target_modules"] = list(values["target_modules"])
        return values


NAMES = tuple(f.name for f in fields(Hyperparameters))


def check(hp: Hyperparameters) -> None:
    """Refuse impossible values before any time is spent, saying what to change."""
    if not hp.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0 (LoRA: ~1e-4 to 1e-3; full FT: ~1e-5), not {hp.learning_rate}")
    if hp.max_steps is not None and hp.num_epochs is not None:
        raise ValueError(f"Give max_steps or num_epochs, not both (max_steps={hp.max_steps}, "
                         f"num_epochs={hp.num_epochs}): drop max_steps to train for epochs, or num_epochs to train "
                         "for a number of steps.")
    if hp.max_steps is None and hp.num_epochs is None:
        raise ValueError("Give the run's length: max_steps (updates) or num_epochs (passes over the training set).")
    if hp.max_steps is not None and (not isinstance(hp.max_steps, int) or hp.max_steps < 1):
        raise ValueError(f"max_steps must be an integer >= 1, not {hp.max_steps!r}")
    if hp.num_epochs is not None and not hp.num_epochs > 0:
        raise ValueError(f"num_epochs must be > 0 (the theory's typical SFT value: 1-3), not {hp.num_epochs!r}")
    if hp.batch_size < 1 or hp.gradient_accumulation_steps < 1:
        raise ValueError(f"batch_size and gradient_accumulation_steps must be >= 1, not {hp.batch_size} and "
                         f"{hp.gradient_accumulation_steps}")
    check_lora(hp.lora_r, hp.lora_alpha, hp.lora_dropout)
    if hp.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0 (typical: 0 to 0.1), not {hp.weight_decay!r}")
    if hp.loraplus_lr_ratio is not None and not hp.loraplus_lr_ratio >= 1:
        raise ValueError(f"loraplus_lr_ratio is B's rate over A's: use >= 1 (the LoRA+ paper's default: 16), or None "
                         f"for one rate, not {hp.loraplus_lr_ratio!r}")
    if hp.loraplus_lr_ratio is not None and hp.optim != "adamw_torch":
        raise ValueError(f"LoRA+ builds AdamW with two rates; it does not combine with optim={hp.optim!r}: use "
                         "optim='adamw_torch'.")
    if hp.neftune_noise_alpha is not None and not hp.neftune_noise_alpha > 0:
        raise ValueError(f"neftune_noise_alpha must be > 0 (the NEFTune paper tried 5, 10 and 15), or None for no "
                         f"noise, not {hp.neftune_noise_alpha!r}")
    if hp.warmup_steps < 0 or (hp.max_steps is not None and hp.warmup_steps >= hp.max_steps):
        raise ValueError(f"warmup_steps must be in [0, max_steps={hp.max_steps}), not {hp.warmup_steps}")


def lora_alpha_of(r: int, alpha: int | float | None) -> int | float:
    """The adapter's alpha: the given value, or 2 r when None (the theory's rule of thumb; the one place it lives)."""
    return 2 * r if alpha is None else alpha


def check_lora(r, alpha, dropout) -> None:
    """Refuse an impossible LoRA rank, alpha or dropout, saying what is typical."""
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"LoRA rank lora_r must be a positive integer (typical: 8, 16, 32, 64), not {r!r}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"lora_alpha must be positive (rule of thumb: alpha = r or 2 r; None means 2 r), "
                         f"not {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1) (typical: 0 to 0.1), not {dropout!r}")


def check_run(hp: Hyperparameters, *, n_train: int, device: str) -> None:
    """The checks that need the data and the device: a non-empty training set, warmup shorter than the run,
    and GPU-only optimizers on a GPU."""
    if n_train < 1:
        raise ValueError("The training set is empty: give at least one example (check your filter or file).")
    steps = hp.steps(n_train)
    if hp.warmup_steps >= steps:
        raise ValueError(f"warmup_steps must be in [0, {steps}) (the steps of this run), not {hp.warmup_steps}")
    if hp.optim in GPU_ONLY_OPTIMIZERS and device != "cuda":
        raise ValueError(f"optim={hp.optim!r} comes from bitsandbytes' CUDA kernels and needs a GPU; "
                         "on the CPU use optim='adamw_torch'.")


def check_method(method: str) -> None:
    """Raise a clear error for a method that is not one of the course's three."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {', '.join(METHODS)}")


def check_variants(method: str, hp: Hyperparameters) -> None:
    """Refuse an adapter variant (DoRA, LoRA+) for full fine-tuning, which trains no adapter."""
    asked = [name for name, on in (("use_dora", hp.use_dora), ("loraplus_lr_ratio", hp.loraplus_lr_ratio)) if on]
    if method == "full" and asked:
        raise ValueError(f"{', '.join(asked)} change(s) LoRA's adapters, and full fine-tuning has none: use method "
                         "'lora' or 'qlora', or drop it.")


def default_hyperparameters(method: str = "lora", profile=None) -> Hyperparameters:
    """The course's defaults for one method at one profile's sizes (the one place defaults live)."""
    from ftkit.core.profiles import get_profile

    check_method(method)
    profile = profile or get_profile()
    return Hyperparameters(
        learning_rate=DEFAULT_LEARNING_RATE[method],
        max_steps=profile.max_steps,  # the profile sizes a default run for its machine
        num_epochs=None,
        batch_size=profile.batch_size,
        gradient_accumulation_steps=1,
        lora_r=16,  # the middle of the theory's 8-64
        lora_alpha=None,  # 2 r
        lora_dropout=0.0,  # its random masks were a third of a CPU step; chapter 3 measures it as a regulariser
        use_rslora=False,  # the LoRA paper's alpha / r, as the theory writes it
        target_modules="all-linear",
        weight_decay=0.0,
        warmup_steps=0,  # a dozen CI steps have no room for warmup
        lr_scheduler="cosine",
        optim="adamw_torch",  # the same optimizer for every method, so the comparison is fair
        gradient_checkpointing=False,
        seed=0,
    )


def with_overrides(hp: Hyperparameters, overrides: dict, *, caller: str = "run_experiment") -> Hyperparameters:
    """hp with some fields changed by name. Unknown names are refused with the valid ones; giving num_epochs alone
    replaces max_steps (and max_steps alone replaces num_epochs); giving both is refused."""
    unknown = sorted(set(overrides) - set(NAMES))
    if unknown:
        raise TypeError(f"{caller}() got unknown hyperparameter(s) {', '.join(unknown)}; the hyperparameters are: "
                        f"{', '.join(NAMES)}")
    if not overrides:
        return hp
    overrides = dict(overrides)
    if "max_steps" in overrides and "num_epochs" in overrides:
        if overrides["max_steps"] is not None and overrides["num_epochs"] is not None:
            raise ValueError(f"Give max_steps or num_epochs, not both (max_steps={overrides['max_steps']}, "
                             f"num_epochs={overrides['num_epochs']}): drop max_steps to train for epochs, or "
                             "num_epochs to train for a number of steps.")
    elif "num_epochs" in overrides and overrides["num_epochs"] is not None:
        overrides["max_steps"] = None
    elif "max_steps" in overrides and overrides["max_steps"] is not None:
        overrides["num_epochs"] = None
    return replace(hp, **overrides)


def resolve(method: str, hp: Hyperparameters | None, profile, overrides: dict, caller: str = "run_experiment"
            ) -> Hyperparameters:
    """The settings of one run, resolved once where it is asked for: hp (or the defaults for method and profile)
    with the keyword overrides applied and checked. Everything after receives the Hyperparameters, never keywords."""
    check_method(method)
    hp = with_overrides(hp if hp is not None else default_hyperparameters(method, profile), overrides, caller=caller)
    check_variants(method, hp)
    return hp


# The fields that shape a loaded model (its adapters, gradient checkpointing): what load_model takes.
LOADING_NAMES = ("lora_r", "lora_alpha", "lora_dropout", "use_rslora", "use_dora", "target_modules",
                 "gradient_checkpointing")


def loading_settings(method: str, hp: Hyperparameters | None, overrides: dict) -> Hyperparameters:
    """resolve() for load_model: only the fields that shape the model can be given as keywords."""
    other = sorted(set(overrides) - set(LOADING_NAMES))
    if other:
        raise TypeError(f"load_model() got {', '.join(other)}: it takes the settings that shape the model "
                        f"({', '.join(LOADING_NAMES)}); training settings go to run_experiment.")
    return resolve(method, hp, None, overrides, caller="load_model")
