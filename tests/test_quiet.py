"""What a learner sees: a training run prints one progress bar, not dataset bars or per-step dictionaries, and
FTKIT_VERBOSE=1 brings everything back (issue 12)."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ftkit.core import quiet
from ftkit.core.profiles import cpu_has_bf16

RUN = """
import ftkit
data = ftkit.load_course_dataset(n_train=8, n_validation=4, n_test=4, n_heldout=4, seed=0)
for method in ("lora", "full"):  # full FT saves the whole model: save_pretrained's bar
    result = ftkit.run_experiment(method, profile=ftkit.get_profile("ci"), model="tiny-random", data=data,
                                  max_steps=2, eval_every=1, batch_size=4, save=True, score_splits=())
    print("trained steps:", result.history[-1]["step"])
"""
NOISE = {
    "dataset bars": "Tokenizing train dataset",
    "per-step dictionaries": "{'loss': ",
    "deprecation warning": "is_gradient_checkpointing",
    "weight-loading bars": "Loading weights",
    "weight-saving bars": "Writing model shards",  # save_pretrained of a whole model (full FT)
}


def _training_output(verbose: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "FTKIT_PROFILE": "ci"}
    env.pop(quiet.VERBOSE_ENV, None)
    if verbose:
        env[quiet.VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_training_run_shows_one_bar_and_its_numbers_only():
    out = _training_output(verbose=False)
    assert "trained steps: 2" in out
    assert "2/2" in out and "loss=" in out  # the one training bar, with the loss beside it
    assert [name for name, text in NOISE.items() if text in out] == []
    assert quiet.BNB_KERNEL_MESSAGE not in out


@pytest.mark.slow
def test_ftkit_verbose_shows_everything():
    out = _training_output(verbose=True)
    assert [name for name, text in NOISE.items() if text not in out] == []
    if cpu_has_bf16():  # bitsandbytes tries its hub kernel only on AVX512-BF16 CPUs
        assert quiet.BNB_KERNEL_MESSAGE in out


def _warn():
    warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=2)


def test_library_warnings_are_hidden_only_inside_ftkit_calls(monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet.library_warnings():
            _warn()
            warnings.warn("a warning that means something", UserWarning, stacklevel=2)
        _warn()  # outside: Python's warnings are untouched
    assert [type(w.message) for w in seen] == [UserWarning, FutureWarning]


def test_bitsandbytes_import_message_is_dropped_unless_verbose(monkeypatch, caplog):
    quiet.silence_import_messages()
    logger = logging.getLogger(quiet.BNB_LOGGER)
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger=quiet.BNB_LOGGER):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
        logger.warning("some other bitsandbytes warning")
        monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
        logger.warning("Failed to load CPU gemm_4bit_forward (verbose)")
    assert [r.getMessage()[:30] for r in caplog.records] == ["some other bitsandbytes warning"[:30],
                                                            "Failed to load CPU gemm_4bit_f"]
