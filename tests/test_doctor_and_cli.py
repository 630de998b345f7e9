import importlib

import pytest

import ftkit
from ftkit.__main__ import main
from ftkit.tools.doctor import TESTED_VERSIONS


def test_doctor_reports_every_area(capsys):
    checks = ftkit.doctor()
    names = {c.name for c in checks}
    assert {"python", "device", "RAM available", "disk free (cache)", "model smollm2-135m"} <= names
    assert set(ftkit.TESTED_VERSIONS) <= names
    out = capsys.readouterr().out
    problems = sum(not c.ok for c in checks)
    assert out.rstrip().endswith(f"{problems} problem(s) found." if problems else "All checks passed.")
    assert out.count("[FIX]") == problems and out.count("[ok ]") == len(checks) - problems


def test_doctor_checks_the_models_of_the_profile_it_runs(monkeypatch, tmp_path):
    # Colab's t4 profile trains hub models: the built-in model not being cached there is no problem (issue 20, item 10)
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path))  # an empty cache
    t4 = {c.name: c for c in ftkit.doctor(verbose=False, profile=ftkit.PROFILES["t4"]) if c.name.startswith("model ")}
    assert set(t4) == {"model HuggingFaceTB/SmolLM2-360M-Instruct", "model Qwen/Qwen2.5-7B-Instruct"}
    assert all(c.ok for c in t4.values())
    ci = {c.name: c for c in ftkit.doctor(verbose=False, profile=ftkit.PROFILES["ci"]) if c.name.startswith("model ")}
    assert set(ci) == {"model smollm2-135m"} and not ci["model smollm2-135m"].ok
    assert "prefetch --profile ci" in ci["model smollm2-135m"].fix


def test_doctor_ending_counts_the_problems(monkeypatch, capsys):
    monkeypatch.setitem(TESTED_VERSIONS, "peft", "0.0.1")
    monkeypatch.setitem(TESTED_VERSIONS, "no-such-package-ftkit", "1.0")
    checks = ftkit.doctor()
    out = capsys.readouterr().out
    problems = sum(not c.ok for c in checks)
    assert problems >= 2 and out.rstrip().endswith(f"{problems} problem(s) found.")
    assert "[FIX] peft" in out and "-> pip install no-such-package-ftkit==1.0" in out


def test_doctor_flags_a_version_mismatch_with_its_fix(monkeypatch):
    monkeypatch.setitem(TESTED_VERSIONS, "peft", "0.0.1")
    peft = next(c for c in ftkit.doctor(verbose=False) if c.name == "peft")
    assert not peft.ok and "pip install peft==0.0.1" in peft.fix


def test_doctor_flags_a_missing_package(monkeypatch):
    monkeypatch.setitem(TESTED_VERSIONS, "no-such-package-ftkit", "1.0")
    check = next(c for c in ftkit.doctor(verbose=False) if c.name == "no-such-package-ftkit")
    assert not check.ok and check.value == "missing"


def test_constraints_agree_with_the_tested_versions():
    from ftkit.tools.notebooks import ROOT

    text = (ROOT / "constraints.txt").read_text()
    pins = dict(line.strip().split("==") for line in text.splitlines() if "==" in line and not line.startswith("#"))
    for package, version in ftkit.TESTED_VERSIONS.items():
        assert pins.get(package) == version, f"constraints.txt pins {package}=={pins.get(package)}, doctor says {version}"


def test_cli_reports_errors_without_a_traceback(capsys, monkeypatch):
    monkeypatch.setenv("FTKIT_PROFILE", "nope")
    assert main(["compare"]) == 2
    assert "Unknown profile 'nope'" in capsys.readouterr().err


BAD_INPUT = [  # what a new user types wrong, and the words of the refusal
    (["compare", "--steps", "0"], "--steps: must be at least 1"),
    (["compare", "--steps", "-3"], "--steps: must be at least 1"),
    (["compare", "--steps", "ten"], "--steps: 'ten' is not a whole number"),
    (["compare", "--seq-len", "0"], "--seq-len: must be at least 1"),
    (["compare", "--model", "smollm-9000"], "Unknown model 'smollm-9000'"),
    (["compare", "--profile", "laptop"], "Unknown profile 'laptop'"),
    (["compare", "--out", "/proc/ftkit-cannot-write-here"], "No such file or directory"),
    (["finetune", "--lr", "-1"], "--lr: must be > 0"),
    (["finetune", "--lr", "0"], "--lr: must be > 0"),
    (["finetune", "--method", "dora"], "invalid choice: 'dora'"),
    (["finetune", "--model", "gpt5"], "Unknown model 'gpt5'"),
    (["sweep", "learnin_rate", "1e-4", "1e-3"], "Unknown hyperparameter 'learnin_rate'"),
    (["sweep", "learning_rate", "-1", "1e-3"], "learning_rate=-1 is refused"),
    (["sweep", "lora_r", "0", "8"], "lora_r=0 is refused"),
    (["sweep", "learning_rate", "1e-4", "--steps", "0"], "--steps: must be at least 1"),
    (["prefetch", "--profile", "laptop"], "Unknown profile 'laptop'"),
]


@pytest.mark.parametrize("argv, refusal", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_cli_refuses_bad_input_before_any_work(argv, refusal, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    for module, name in (("ftkit.core.train", "run_experiment"), ("ftkit.core.generation", "evaluate_task"),
                         ("ftkit.chapters.methods.compare", "compare_methods"), ("ftkit.core.models", "load_model"),
                         ("ftkit.core.builtin", "builtin_model_dir")):
        monkeypatch.setattr(importlib.import_module(module), name, no_work)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's refusal: usage and the error, exit status 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and refusal in err and "Traceback" not in err, err


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("compare", "finetune", "prefetch", "doctor", "sync-notebooks"):
        assert command in out


def test_cli_finetune_prints_before_and_after(capsys):
    assert main(["finetune", "--profile", "ci", "--model", "tiny-random", "--lr", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "exact match before" in out and "heldout" in out and "test" in out


HIDE = """
import sys


class Hide:
    '''A broken install: importing {package} (or a submodule) fails as if it were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name == {package!r} or name.startswith({package!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}")


sys.meta_path.insert(0, Hide())
from ftkit.__main__ import main

sys.exit(main(["doctor"]))
"""


@pytest.mark.parametrize("package", ["datasets", "torch"])
def test_doctor_survives_a_missing_package_and_says_how_to_fix_it(package):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", HIDE.format(package=package)], capture_output=True, text=True,
                         timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1, run.stdout + run.stderr  # problems found, reported, no crash
    line = next(line for line in run.stdout.splitlines() if line.startswith(f"[FIX] {package} "))
    assert "missing" in line
    assert f"-> pip install {package}=={TESTED_VERSIONS[package]}" in run.stdout
    assert run.stdout.rstrip().endswith("problem(s) found.")
    if package == "torch":
        assert "[FIX] device" in run.stdout and "torch does not import" in run.stdout


def test_import_ftkit_is_light():
    """`import ftkit` imports none of the heavy libraries; they come with the first name that needs them."""
    import subprocess
    import sys

    code = ("import sys, ftkit; heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'matplotlib.pyplot')"
            " if m in sys.modules]; print(heavy); ftkit.Hyperparameters; print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split("\n")[:2] == ["[]", "False"], run.stdout + run.stderr
