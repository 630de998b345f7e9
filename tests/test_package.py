"""The package is self-contained: installed from its wheel (not editable) and run away from this checkout, it finds
its claims, prints a verdict and runs chapter 4's sharded check (the FSDP worker and its config ship inside ftkit)."""

import os
import subprocess
import sys

import pytest

from ftkit.tools.notebooks import ROOT

FROM_ELSEWHERE = """
import ftkit
print("ftkit from", ftkit.__file__)
print(ftkit.verdict("1.vram", True, "read from the installed copy's CLAIMS.md"))
S = ftkit.scaling
kw = dict(max_steps=2, batch_size=4, max_seq_len=32, learning_rate=1e-3, save=False, progress=False)
single = S.run_sharded("tiny-random", n_processes=1, **kw)
sharded = S.run_sharded("tiny-random", n_processes=2, **kw)
print(" ".join(sharded["command"]))
print(S.sharding_verdict(single, sharded))
"""


@pytest.mark.slow
def test_a_non_editable_install_runs_away_from_the_checkout(tmp_path):
    site = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(ROOT)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", FROM_ELSEWHERE], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == f"ftkit from {site / 'ftkit' / '__init__.py'}"  # the installed copy, not the checkout
    assert lines[1] == "as the theory says: read from the installed copy's CLAIMS.md"
    assert f"--config_file {site}/ftkit/chapters/scaling/fsdp_cpu_2proc.yaml" in lines[2]
    assert "--module ftkit.chapters.scaling.worker" in lines[2]
    assert str(ROOT) not in out.stdout.replace(sys.executable, "python")  # nothing of the checkout but its venv
    assert lines[-1].startswith("not settled at this size: ")  # both processes measured; tiny-random is too small to decide
