"""What a learner sees: one progress bar per training run (and per generation or sweep), the numbers the course
prints, the plots, and warnings that mean something to them. The rest is silenced where it starts, only around
what ftkit runs; Python's warnings are never muted globally. FTKIT_VERBOSE=1 shows everything again.

Used by ftkit.train (every training run) and at `import ftkit` (bitsandbytes' import message).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

VERBOSE_ENV = "FTKIT_VERBOSE"

# Messages that say nothing a learner can act on, with where they come from.
BNB_LOGGER = "bitsandbytes.backends.cpu.ops"  # at import, on AVX512-BF16 CPUs: it would fetch a kernel from the hub
BNB_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward"
# peft and TRL still read model.is_gradient_checkpointing, which transformers 5 deprecated: not the learner's code.
GRADIENT_CHECKPOINTING_WARNING = "`is_gradient_checkpointing` is deprecated"


def verbose() -> bool:
    """True when FTKIT_VERBOSE asks for every message (1, true, yes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


class _DropMessage(logging.Filter):
    """Drop one logger's records that start with a given text (unless FTKIT_VERBOSE)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return verbose() or not record.getMessage().startswith(self.prefix)


def silence_import_messages() -> None:
    """Before bitsandbytes is imported: drop its 'Failed to load CPU gemm_4bit_forward' (its own CPU path is used)."""
    logger = logging.getLogger(BNB_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(BNB_KERNEL_MESSAGE))


silence_import_messages()  # `import ftkit` imports this module first


@contextlib.contextmanager
def library_warnings():
    """Around a library call of ftkit's: hide the deprecation warnings libraries raise about each other's code."""
    with warnings.catch_warnings():
        if not verbose():
            warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_WARNING, category=FutureWarning)
        yield


@contextlib.contextmanager
def quiet_loading():
    """Around from_pretrained and save_pretrained: no "Loading weights" or "Writing model shards" bar (transformers
    draws one per load and per save, a dozen in a sweep notebook, most under a second)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not verbose():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_gguf():
    """Around reading a GGUF checkpoint: no "Converting and de-quantizing GGUF tensors" bar (transformers draws it with
    a plain tqdm that nothing turns off; the built-in model's first use shows its own one-line progress instead)."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf

    original = gguf.tqdm
    if not verbose():
        gguf.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf.tqdm = original


@contextlib.contextmanager
def quiet_training():
    """Around preparing data and building a trainer: no dataset-preparation bars (ftkit's "Map", TRL's "Tokenizing
    train dataset", "Truncating ...": about ten per run) and no library deprecation warnings."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not verbose():
        datasets.disable_progress_bars()
    try:
        with library_warnings():
            yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def quiet_trainer(trainer):
    """Keep the Trainer's one progress bar, showing the loss, and drop the log dictionary it prints every step in a
    terminal. In a notebook the Trainer draws its own table, which stays. Returns the trainer."""
    if verbose():
        return trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossInBar(ProgressCallback):
        """transformers' training bar with the latest losses beside it, instead of a printed dict per step and a
        second bar per validation."""

        def __init__(self):
            super().__init__()
            self.postfix = {}

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            pass

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                self.postfix.update({k: f"{logs[k]:.4g}" for k in ("loss", "eval_loss") if k in logs})
                self.training_bar.set_postfix(self.postfix, refresh=False)

    trainer.pop_callback(PrinterCallback)  # progress=False: no bar, and no dicts either
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LossInBar())
    return trainer
