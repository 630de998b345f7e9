import pytest
import torch

import ftkit
from ftkit.core.profiles import detect_profile_name, resolve_precision


def test_env_variable_picks_profile(monkeypatch):
    monkeypatch.setenv("FTKIT_PROFILE", "cpu")
    assert ftkit.get_profile().name == "cpu"
    monkeypatch.setenv("FTKIT_PROFILE", "ci")
    assert ftkit.get_profile().name == "ci"


def test_unknown_profile_lists_known(monkeypatch):
    monkeypatch.setenv("FTKIT_PROFILE", "laptop")
    with pytest.raises(ValueError, match="ci, cpu, gpu, t4"):
        ftkit.get_profile()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_detects_cpu_and_refuses_gpu_profile():
    assert detect_profile_name() == "cpu"
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        ftkit.get_profile("t4")


def test_precision_is_resolved_never_auto():
    for name in ("ci", "cpu"):
        assert ftkit.get_profile(name).precision in ("fp32", "bf16")
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_overrides_replace_one_field():
    p = ftkit.get_profile("ci", max_steps=3)
    assert p.max_steps == 3 and p.batch_size == ftkit.PROFILES["ci"].batch_size


def test_every_profile_has_sane_sizes():
    for p in ftkit.PROFILES.values():
        assert p.max_steps >= 1 and p.batch_size >= 1 and p.eval_every <= p.max_steps
        assert p.n_train >= p.batch_size and p.max_seq_len >= 128  # course examples are ~90-105 tokens


def test_chapter_two_and_three_seeds_can_be_lowered_and_bad_values_are_refused(monkeypatch):
    from ftkit.chapters.hyperparameters import sizes
    from ftkit.chapters.overfitting import setup_of

    ci, cpu = ftkit.get_profile("ci"), ftkit.get_profile("cpu")
    assert sizes(cpu).seeds == (0, 1, 2) and sizes(cpu, seeds=1).seeds == (0,) and sizes(ci).seeds == (0,)
    assert setup_of(cpu).seeds == (0, 1, 2)
    monkeypatch.setenv("FTKIT_SEEDS", "2")
    assert sizes(cpu).seeds == (0, 1) and sizes(cpu, seeds=4).seeds == (0, 1, 2, 3)  # the argument wins
    assert setup_of(cpu).seeds == (0, 1) and setup_of(ci).steps == 10
    monkeypatch.setenv("FTKIT_SEEDS", "two")
    with pytest.raises(ValueError, match="FTKIT_SEEDS='two': give a whole number"):
        sizes(ci)
    with pytest.raises(ValueError, match="seeds must be a whole number"):
        sizes(ci, seeds=0)
