"""The Colab capstone's helpers: the T4 recipe, a memory plan, Drive checkpoints, a live loss plot, keep and share.

Used in colab/capstone_qlora_t4.ipynb (and scripts/t4_emulation.py, which runs the same recipe on a capped GPU).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import TrainerCallback

from ftkit.chapters.capstone.sizes import FAST_MODEL
from ftkit.core.builtin import model_path
from ftkit.core.configs import config_for, model_shape
from ftkit.core.estimate import GPUS, estimate_memory, estimate_peak
from ftkit.core.hparams import Hyperparameters
from ftkit.core.memory import GB
from ftkit.core.data import prompt_text
from ftkit.core.models import autocast, cast_qlora_adapters, evaluating, load_base
from ftkit.core.quiet import quiet_loading
from ftkit.core.runtime import drive_dir, in_colab
from ftkit.core.train import history_of

T4_GIB = GPUS["T4 16 GB"]  # what torch can use on Colab's T4 (FINDINGS §6: about 14.5-14.75 GiB)


# --- plan before loading ------------------------------------------------------------------------


def memory_budget(gpu_gib: float | None = None) -> tuple[int, str]:
    """Bytes training may use and what they are: the given GPU size, the visible GPU, an emulated T4's (stand-in for
    torch.cuda.mem_get_info, ftkit.emulation), or the available RAM."""
    from ftkit.core.emulation import emulating

    if gpu_gib is None and emulating() == "t4":
        gpu_gib = T4_GIB
    if gpu_gib is not None:
        return int(gpu_gib * GB), f"{gpu_gib:.2f} GiB GPU" + (" (emulated T4)" if emulating() else "")
    if torch.cuda.is_available():
        total = torch.cuda.mem_get_info()[1]
        return total, f"{torch.cuda.get_device_name(0)} ({total / GB:.2f} GiB)"
    import psutil

    available = psutil.virtual_memory().available
    return available, f"available RAM ({available / GB:.1f} GiB)"


def estimate_peak_bytes(model: str, hp: Hyperparameters, profile, upcast_frozen_to_fp32: bool | None = None) -> dict:
    """Estimated QLoRA training memory (bytes) of a model name with hp at the profile's precision and sequence length:
    the four buckets and the step's peak. upcast_frozen_to_fp32: None plans what run_experiment trains by default
    (lean QLoRA, but peft's fp32 upcast under fp16: ftkit.models.default_upcast); False lean; True peft's
    prepare_model_for_kbit_training (frozen non-4-bit weights in fp32)."""
    config = config_for(model)
    seq, batch = profile.max_seq_len, hp.batch_size
    est = estimate_memory(config, "qlora", seq_len=seq, batch_size=batch, precision=profile.precision,
                          optimizer=hp.optim, gradient_checkpointing=hp.gradient_checkpointing, lora_r=hp.lora_r,
                          target_modules=hp.target_modules, upcast_frozen_to_fp32=upcast_frozen_to_fp32)
    peak = estimate_peak(est, config, seq_len=seq, batch_size=batch)
    return {"weights": est.weights, "gradients": est.gradients, "optimizer": est.optimizer,
            "activations": est.activations, "peak": peak}


def plan_memory(model: str, hp: Hyperparameters, profile, *, gpu_gib: float | None = None, headroom_gib: float = 1.0,
                upcast_frozen_to_fp32: bool | None = None):
    """(estimate, fits, message): the chapter-1 estimator for this model, hp and profile against this GPU (or RAM).

    gpu_gib: plan for a GPU of that size (T4_GIB for Colab) instead of the one visible here.
    upcast_frozen_to_fp32: the QLoRA preparation to plan (None: the one the capstone trains at this precision).
    When it does not fit, the message lists the fixes that do, so the notebook can refuse before loading."""
    estimate = estimate_peak_bytes(model, hp, profile, upcast_frozen_to_fp32)
    budget, where = memory_budget(gpu_gib)
    limit = budget - headroom_gib * GB
    estimate["budget"] = budget
    fits = estimate["peak"] <= limit
    line = (f"{model}: estimated peak {estimate['peak'] / GB:.2f} GiB (weights {estimate['weights'] / GB:.2f}, "
            f"activations {estimate['activations'] / GB:.2f}) on {where}, keeping {headroom_gib:g} GiB free")
    if fits:
        return estimate, True, f"fits: {line}."
    half = profile.max_seq_len // 2
    fixes = []
    for label, other_model, other_hp, other_profile in (
        ("hp = replace(hp, batch_size=1)", model, replace(hp, batch_size=1), profile),
        (f"profile = replace(profile, max_seq_len={half})", model, hp, replace(profile, max_seq_len=half)),
        ("both of those", model, replace(hp, batch_size=1), replace(profile, max_seq_len=half)),
        (f"MODEL = {FAST_MODEL!r}", FAST_MODEL, hp, profile),
    ):
        peak = estimate_peak_bytes(other_model, other_hp, other_profile, upcast_frozen_to_fp32)["peak"]
        if peak <= limit:
            fixes.append(f"{label} ({peak / GB:.2f} GiB)")
    fix = "; or ".join(fixes) if fixes else "a smaller model (fewer parameters) or a bigger GPU"
    return estimate, False, f"does NOT fit: {line}. Fix before loading: {fix}."


# --- checkpoints that survive a disconnect --------------------------------------------------------


def checkpoint_dir(name: str) -> Path:
    """Where a run keeps its checkpoints: Drive (MyDrive/ftkit/<name>) when mounted on Colab, else outputs/<name>."""
    return drive_dir(name) or Path("outputs") / name


# --- a live loss curve ----------------------------------------------------------------------------


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except ImportError:
        return False


class LiveLoss(TrainerCallback):
    """Redraws train and validation loss every `every` steps with elapsed and remaining time (notebooks only).
    Reads the Trainer's log through ftkit.train.history_of, as Result.history does (a resumed run included)."""

    def __init__(self, every: int = 5, show: bool | None = None):
        self.every, self.show = every, _in_notebook() if show is None else show
        self.train, self.eval, self.handle, self.text = [], [], None, ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "eval_loss" in (logs or {}):
            self.draw(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.draw(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.draw(state)

    def draw(self, state) -> None:
        """Update the curves and the status line and, in a notebook, the plot in place."""
        history = history_of(state.log_history)
        self.train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
        self.eval = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
        elapsed = time.perf_counter() - self.start
        done = max(1, state.global_step - self.first_step)
        remaining = elapsed / done * max(0, state.max_steps - state.global_step)
        self.text = (f"step {state.global_step}/{state.max_steps} · elapsed {elapsed / 60:.1f} min · "
                     f"remaining ~{remaining / 60:.1f} min")
        if not self.show or not self.train:
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(5.5, 3))
        ax.plot(*zip(*self.train), lw=1, alpha=0.6, label="train")
        if self.eval:
            ax.plot(*zip(*self.eval), "o-", lw=2, ms=4, label="validation")
        ax.set(xlabel="step", ylabel="loss", title=self.text)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


# --- keep it: reload, merge, share ----------------------------------------------------------------


def reload_adapter(model: str, adapter_dir, *, precision: str, device: str):
    """A fresh 4-bit NF4 base with the saved adapter on top, the way anyone would reload it (eval mode)."""
    from peft import PeftModel

    base = load_base(model, "qlora", precision=precision, device=device)  # the dtypes and workaround training had
    return cast_qlora_adapters(PeftModel.from_pretrained(base, str(adapter_dir)), precision).eval()  # as trained


def prompt_logits(model, tokenizer, conversations: list[list[dict]], precision: str = "fp32") -> list[torch.Tensor]:
    """The model's logits (fp32, on the CPU) for each prompt, computed under `precision` autocast as in training
    (the Trainer leaves its autocast on the trained model's forward), to compare two models without holding both."""
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for conversation in conversations:
            ids = tokenizer(prompt_text(tokenizer, conversation), return_tensors="pt", add_special_tokens=False)
            with autocast(precision, device.type):
                out.append(model(input_ids=ids["input_ids"].to(device)).logits.float().cpu())
    return out


def max_logit_diff(logits_a: list[torch.Tensor], logits_b: list[torch.Tensor]) -> float:
    """Largest absolute difference between two lists of logits from prompt_logits."""
    return max((a - b).abs().max().item() for a, b in zip(logits_a, logits_b, strict=True))


def merge_adapter(model: str, adapter_dir, out_dir, *, dtype: torch.dtype = torch.float16):
    """(merged model or None, message): the adapter merged into a 16-bit copy of the base, saved to out_dir.

    Done on the CPU; refused with a message when the 16-bit model would not fit in the available RAM."""
    import psutil
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    need = model_shape(model).num_params() * 2 * 1.2  # weights + merge temporaries
    available = psutil.virtual_memory().available
    if need > available:
        return None, (f"skipped: a 16-bit copy of {model} needs ~{need / GB:.1f} GiB of RAM and this runtime has "
                      f"{available / GB:.1f} GiB available. Merge on a machine with more RAM (same code), or "
                      "serve the 4-bit base + adapter as they are.")
    with quiet_loading():
        base = AutoModelForCausalLM.from_pretrained(model_path(model), dtype=dtype)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()
        merged.save_pretrained(out_dir)
    return merged, f"merged into a {str(dtype).removeprefix('torch.')} copy of the base, saved to {out_dir}"


def push_to_hub(model, repo_id: str, tokenizer=None) -> str | None:
    """Push a model (or adapter) to a private Hub repo with the HF_TOKEN Colab secret; None with a message otherwise."""
    if not in_colab():
        print(f"Not on Colab: would push to https://huggingface.co/{repo_id} with the HF_TOKEN secret. "
              "Elsewhere: `huggingface-cli login`, then model.push_to_hub(repo_id).")
        return None
    try:
        from google.colab import userdata

        token = userdata.get("HF_TOKEN")
    except Exception:  # no such secret, or notebook access not granted
        token = None
    if not token:
        print("No HF_TOKEN secret: in Colab open the key icon (Secrets), add HF_TOKEN (a write token from "
              "huggingface.co/settings/tokens) and allow this notebook to read it. Nothing was pushed.")
        return None
    url = model.push_to_hub(repo_id, token=token, private=True)  # the token is never printed
    if tokenizer is not None:
        tokenizer.push_to_hub(repo_id, token=token, private=True)
    print(f"pushed to https://huggingface.co/{repo_id} (private)")
    return str(url)
