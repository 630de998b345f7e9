"""scripts/t4_emulation.py runs end to end here (--smoke: the same code on the CPU, tiny model) and refuses without CUDA."""

import json
import subprocess
import sys

import pytest
import torch

from ftkit.tools.notebooks import ROOT

SCRIPT = ROOT / "scripts" / "t4_emulation.py"


def test_smoke_run_writes_every_number(tmp_path):
    out = tmp_path / "t4.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["smoke"] and result["versions"]["torch"] and result["date"]
    batch, seq = result["recipe"]["batch_size"], result["recipe"]["max_seq_len"]
    assert (batch, seq) == (2, 32)  # the smoke profile's sizes reached the run
    for recipe in ("capstone", "hf_default"):
        r = result[recipe]
        assert r["fits"] and r["peak_bytes"] > 0 and r["peak_gib"] == pytest.approx(r["peak_bytes"] / 2**30)
        assert r["tokens_per_s"] * r["s_per_step"] == pytest.approx(batch * seq)  # tokens per step, as timed
        assert 0 < r["final_loss"] < 20  # a finite loss near ln(vocab) for a random model, not NaN
    assert result["recipe"]["gradient_checkpointing"] and not result["hf_default_recipe"]["gradient_checkpointing"]
    assert result["hf_default_recipe"]["precision"] == "fp32" and result["hf_default_recipe"]["optim"] == "adamw_torch"
    assert result["ratios"]["memory"] == pytest.approx(result["capstone"]["peak_bytes"] / result["hf_default"]["peak_bytes"])
    assert set(result["ratios"]) == {"memory", "speed"}
    assert "capstone / defaults" in run.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "needs a CUDA GPU" in run.stdout
    assert not (tmp_path / "x.json").exists()
