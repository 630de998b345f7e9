"""ftkit: the helpers behind the course "Fine-tuning LLMs, measured".

One flat module per concern; everything a notebook needs is importable from here:
    profiles  - one setting (FTKIT_PROFILE) chooses every size
    models    - load a model for full / lora / qlora (built-in offline model, hub ids, tiny test model)
    data      - the course dataset (sentence -> JSON record) and its metrics
    hparams   - Hyperparameters: the training settings as one object, defaults per profile and method
    train     - run_experiment: train with TRL's SFTTrainer and measure everything
    claims    - the claims the course tests (CLAIMS.md) and verdict(): "as the theory says" / "differs here"
    memory    - training memory, measured exactly and estimated from a config; which GPU fits
    lora      - LoRA from scratch, checked against peft
    quant     - int4 / NF4 from scratch, checked against bitsandbytes
    compare   - the three methods side by side (the course's main job)
    overfit   - chapter 3: the overfitting baseline, its remedies, the scoreboard and their verdicts
    checks    - exercise checks that say what is wrong
    colab     - the capstone's recipe, memory plan, Drive checkpoints, live loss plot, adapter keeping
    plots     - loss curves, schedules, bar charts (ax=None in, Axes out)
    doctor    - check the machine, each problem with its fix
    notebooks - Colab badges, install cells, notebook hygiene

Importing ftkit imports none of them: each public name is imported from its module on first use (`ftkit.load_model`
imports models, hence torch and transformers), so `python -m ftkit doctor` starts fast and still reports on a broken
install.
"""

import importlib

from .doctor import doctor as doctor  # light (no torch): eager, so the function, not its module, is ftkit.doctor

# Each public name and the module that defines it. `ftkit.<name>` imports the module on first use.
_EXPORTS = {
    "checks": ["checks"],
    "claims": ["verdict"],
    "colab": ["colab"],
    "compare": ["compare_methods", "comparison_table", "eval_loss"],
    "data": ["FIELDS", "augment", "format_answer", "load_course_dataset", "load_user_dataset", "parse_answer",
             "profile_dataset", "score", "score_text"],
    "doctor": ["TESTED_VERSIONS"],
    "hparams": ["METHODS", "Hyperparameters", "default_hyperparameters"],
    "lora": ["LoRALinear", "add_lora", "copy_to_peft", "lora_param_count", "time_forward"],
    "memory": ["GPUS", "KNOWN_CONFIGS", "MemoryBreakdown", "estimate_memory", "fit_table", "fits_on", "human_bytes",
               "load_config", "measure_memory"],
    "models": ["KNOWN_MODELS", "cache_dir", "count_parameters", "free_memory", "load_model", "load_tokenizer"],
    "overfit": ["overfit", "overfit_run", "plot_scoreboard", "scoreboard_table"],
    "plots": ["plot_bars", "plot_losses", "plot_lr", "plot_stacked"],
    "profiles": ["PROFILES", "Profile", "get_profile"],
    "quant": ["absmax_dequantize", "absmax_quantize", "bnb_nf4_roundtrip", "compare_with_bnb", "double_quant_bits",
              "nf4_dequantize", "nf4_levels", "nf4_quantize", "reconstruction_error"],
    "train": ["Result", "build_trainer", "evaluate_task", "generate_answers", "run_experiment"],
}
_SUBMODULES = ("checks", "colab", "overfit")  # namespaces: ftkit.checks.check_number, ftkit.overfit.early_stop
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_MODULE_OF, "doctor"])


def __getattr__(name: str):
    """Import a public name's module on first use (PEP 562); submodules such as ftkit.colab likewise."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ftkit' has no attribute {name!r}")
    value = importlib.import_module(f".{module}", __name__)
    if name not in _SUBMODULES:
        value = getattr(value, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
