"""Notebook hygiene: clean in git, a badge for their own path, the generated install cell, no absolute paths."""

import json
import re
import shutil

import pytest

import ftkit
from ftkit.tools import notebooks as nb

NOTEBOOKS = nb.all_notebooks()


def test_there_are_notebooks_in_both_folders():
    folders = {p.relative_to(nb.ROOT).parts[0] for p in NOTEBOOKS}
    assert folders == {"notebooks", "colab"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(nb.ROOT)))
def test_notebook_is_clean(path):
    assert nb.hygiene_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(nb.ROOT)))
def test_sync_would_change_nothing(path):
    """Badges and install cells agree with REPO_SLUG and the tested versions (python -m ftkit sync-notebooks)."""
    assert nb.synced_text(path) == path.read_text()


def test_colab_notebooks_ask_for_a_t4():
    for path in NOTEBOOKS:
        if path.relative_to(nb.ROOT).parts[0] == "colab":
            meta = json.loads(path.read_text())["metadata"]
            assert meta["accelerator"] == "GPU" and meta["colab"]["gpuType"] == "T4"


def colab_constraints() -> dict[str, str]:
    """{name: version} of the constraints the install cell keeps on Colab (its grep, done with Python's re)."""
    keep = re.compile(nb.colab_keeps_pattern(), re.IGNORECASE)
    pins = {}
    for line in (nb.ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#") and not keep.search(line):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def test_install_cell_installs_with_the_tested_constraints_but_keeps_colabs_own():
    source = nb.install_cell_source()
    assert 'if "google.colab" in sys.modules:' in source
    assert "-r /content/course/colab/requirements.txt -c " + nb.COLAB_CONSTRAINTS in source
    pins = colab_constraints()
    for name in ("torch", "numpy", "ipywidgets", "ipykernel", "jupyterlab-widgets", "matplotlib-inline"):
        assert name not in pins  # Colab's CUDA torch, the numpy it was built against, the kernel and widget stack
    # every package the course installs there, and what datasets 5.2 needs newer than Colab's (pyarrow), is pinned
    requirements = (nb.ROOT / "colab" / "requirements.txt").read_text().splitlines()
    names = [re.split(r"[<>=]", r)[0].strip().lower() for r in requirements if r.strip() and not r.startswith("#")]
    assert {"transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate"} <= set(names)
    for name in [*names, "pyarrow", "huggingface-hub", "tokenizers"]:
        assert name in pins, name
    assert pins["transformers"] == ftkit.TESTED_VERSIONS["transformers"]


def test_colab_requirements_are_the_courses_own():
    def bounds(path):
        lines = (nb.ROOT / path).read_text().splitlines()
        return {re.split(r"[<>=]", r)[0].strip().lower(): r.split("#")[0].strip() for r in lines
                if r.strip() and not r.startswith("#")}

    colab, course = bounds("colab/requirements.txt"), bounds("requirements.txt")
    assert all(course.get(name) == line for name, line in colab.items())


def test_hygiene_catches_a_dirty_notebook(tmp_path):
    """In a copy of the repository layout under tmp_path: a crash here leaves nothing in the real notebooks/."""
    path = tmp_path / "notebooks" / "dirty-test.ipynb"
    path.parent.mkdir()
    shutil.copy(NOTEBOOKS[0], path)
    nb.sync_notebook(path, root=tmp_path)  # its badge now names its own (temporary) path
    assert nb.hygiene_problems(path, root=tmp_path) == []
    data = json.loads(path.read_text())
    code = next(c for c in data["cells"] if c["cell_type"] == "code")
    code["outputs"], code["execution_count"] = [{"output_type": "stream", "name": "stdout", "text": "x"}], 3
    data["metadata"]["widgets"] = {"state": {}}
    data["cells"][0]["source"] = ["# no badge here, and /home/me/data.csv"]
    path.write_text(json.dumps(data))
    problems = " | ".join(nb.hygiene_problems(path, root=tmp_path))
    for expected in ("outputs", "execution counts", "widget state", "Colab badge", "absolute path"):
        assert expected in problems
    assert nb.clear_outputs(path)
    assert not any("outputs" in p or "counts" in p or "widget" in p for p in nb.hygiene_problems(path, root=tmp_path))
    assert not list((nb.ROOT / "notebooks").glob("dirty-test*"))


def test_readme_badges_and_links_point_to_real_notebooks():
    readme = (nb.ROOT / "README.md").read_text()
    targets = nb.BADGE_RE.findall(readme)
    assert targets, "the README's chapter table has Colab badges"
    for target in targets:
        slug, path = target.split(f"/blob/{nb.BRANCH}/")
        assert slug == nb.REPO_SLUG
        assert (nb.ROOT / path).is_file(), f"README badge points to missing {path}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(nb.ROOT)))
def test_notebooks_use_only_public_names(path):
    """Every ftkit.<name> a notebook's code uses is exported from ftkit (and so documented in its __all__); no notebook
    imports from an ftkit module directly."""
    import re

    import ftkit

    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    used = set(re.findall(r"(?<![\w.])ftkit\.([A-Za-z_]\w*)", code))
    used |= {name.strip() for names in re.findall(r"^\s*from ftkit import ([\w, ]+)", code, flags=re.M)
             for name in names.split(",")}
    assert used, "no ftkit name found: the pattern above is broken"
    assert not used - set(ftkit.__all__), f"not exported from ftkit: {sorted(used - set(ftkit.__all__))}"
    assert not re.findall(r"^\s*from ftkit\.\w+ import", code, flags=re.M)
    for name in used:
        getattr(ftkit, name)  # each export really resolves
