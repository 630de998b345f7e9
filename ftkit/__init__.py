"""ftkit: the helpers behind the course "Fine-tuning LLMs, measured".

One flat module per concern; everything a notebook needs is importable from here:
    profiles  - one setting (FTKIT_PROFILE) chooses every size
    models    - load a model for full / lora / qlora (built-in offline model, hub ids, tiny test model)
    data      - the course dataset (sentence -> JSON record) and its metrics
    hparams   - Hyperparameters: the training settings as one object, defaults per profile and method
    train     - run_experiment: train with TRL's SFTTrainer and measure everything
    claims    - the claims the course tests (CLAIMS.md) and verdict(): "as the theory says" / "differs here"
    configs   - model configs: known config.json values, config_for(name), the shape that decides memory
    memory    - training memory, measured exactly and estimated from a config; which GPU fits
    lora      - LoRA from scratch, checked against peft
    quant     - int4 / NF4 from scratch, checked against bitsandbytes
    compare   - the three methods side by side (the course's main job)
    sweep     - one hyperparameter at a time: sweeps, the explorer widget, chapter 2's verdicts
    overfit   - chapter 3: the overfitting baseline, its remedies, the scoreboard and their verdicts
    checks    - exercise checks that say what is wrong
    colab     - the capstone's recipe, memory plan, Drive checkpoints, live loss plot, adapter keeping
    scaling   - full fine-tuning sharded over processes (FSDP via accelerate): launch, compare, the ZeRO arithmetic
    plots     - loss curves, schedules, bar charts (ax=None in, Axes out)
    doctor    - check the machine, each problem with its fix
    notebooks - Colab badges, install cells, notebook hygiene
    quiet     - what a learner sees: one bar per run, the numbers, real warnings (FTKIT_VERBOSE=1: everything)

Importing ftkit imports none of them but quiet (stdlib only): each public name is imported from its module on first
use (`ftkit.load_model` imports models, hence torch and transformers), so `python -m ftkit doctor` starts fast and
still reports on a broken install.
"""

import importlib

from . import quiet  # noqa: F401 (stdlib only, eager: it drops bitsandbytes' import message before any use)
from .doctor import doctor as doctor  # light (no torch): eager, so the function, not its module, is ftkit.doctor
from .sweep import sweep as sweep  # light at import, eager for the same reason: ftkit.sweep is the function

# Each public name and the module that defines it. `ftkit.<name>` imports the module on first use.
_EXPORTS = {
    "checks": ["checks"],
    "claims": ["verdict"],
    "colab": ["colab"],
    "compare": ["compare_methods", "comparison_table", "plot_comparison", "table_verdicts", "theory_table"],
    "configs": ["KNOWN_CONFIGS", "LINEAR_NAMES", "ModelShape", "config_for", "config_name", "model_shape"],
    "data": ["FIELDS", "augment", "course_batch", "format_answer", "load_course_dataset", "load_user_dataset",
             "parse_answer", "profile_dataset", "score", "score_text"],
    "doctor": ["TESTED_VERSIONS"],
    "hparams": ["METHODS", "Hyperparameters", "default_hyperparameters"],
    "lora": ["LoRALinear", "add_lora", "copy_to_peft", "lora_param_count", "time_forward"],
    "memory": ["GPUS", "MemoryBreakdown", "base_weight_bytes", "estimate_memory", "fit_table", "fits_on", "human_bytes",
               "lora_params", "measure_memory", "measure_step", "param_bytes", "quant_state_tensors", "random_batch",
               "random_model", "weights_by_dtype"],
    "models": ["KNOWN_MODELS", "autocast", "cache_dir", "count_parameters", "disable_bnb_cpu_repacking", "free_memory",
               "load_base", "load_model", "load_tokenizer", "model_path", "nf4_config", "torch_dtype"],
    "overfit": ["overfit", "overfit_run", "plot_scoreboard", "scoreboard_table"],
    "plots": ["plot_bars", "plot_losses", "plot_lr", "plot_stacked"],
    "profiles": ["PROFILES", "Profile", "get_profile"],
    "scaling": ["scaling", "run_sharded", "sharding_table"],
    "quant": ["absmax_dequantize", "absmax_quantize", "bnb_nf4_roundtrip", "compare_with_bnb", "double_quant_bits",
              "nf4_dequantize", "nf4_levels", "nf4_quantize", "reconstruction_error", "uniform_levels"],
    "sweep": ["SweepResult", "accumulation_check", "alpha_verdicts", "answer_batch", "baseline_loss", "batch_verdicts",
              "diagnose_rates", "epoch_verdicts", "explore", "flat_trainable", "gradient_noise", "lr_verdicts",
              "rank_verdicts", "rise_share", "warmup_verdicts"],
    "train": ["Result", "build_trainer", "dir_bytes", "eval_loss", "evaluate_task", "generate_answers", "history_of",
              "run_experiment"],
}
_SUBMODULES = ("checks", "colab", "overfit", "scaling")  # public as namespaces: ftkit.checks.check_number, ftkit.colab.plan_memory
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_MODULE_OF, "doctor", "sweep"])


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
