"""Notebook hygiene: clean in git, a badge for their own path, the generated install cell, no absolute paths."""

import ast
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
    """Every ftkit.<name> and ftkit.<chapter>.<name> a notebook's code uses is exported (ftkit's or the chapter's
    __all__, so documented there), and really resolves; no notebook imports from an ftkit module directly."""
    import re

    import ftkit

    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    used = set(re.findall(r"(?<![\w.])ftkit\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)", code))
    used |= {name.strip() for names in re.findall(r"^\s*from ftkit import ([\w, ]+)", code, flags=re.M)
             for name in names.split(",")}
    assert used, "no ftkit name found: the pattern above is broken"
    missing = []
    for dotted in used:
        head, _, tail = dotted.partition(".")
        if head not in ftkit.__all__:
            missing.append(dotted)
        elif tail and isinstance(getattr(ftkit, head), type(ftkit)):  # a chapter (or ftkit.checks): its own __all__
            names = getattr(getattr(ftkit, head), "__all__", None) or dir(getattr(ftkit, head))
            if tail not in names:
                missing.append(dotted)
            else:
                getattr(getattr(ftkit, head), tail)  # really resolves
    assert not missing, f"not exported: {sorted(missing)}"
    assert not re.findall(r"^\s*from ftkit\.\w+ import", code, flags=re.M)


def test_the_public_name_check_sees_past_the_first_attribute(tmp_path):
    # ftkit.overfitting.<anything> passed the old check, which read only the first attribute
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["ftkit.overfitting.no_such_helper(1)"]}]}))
    with pytest.raises(AssertionError, match="no_such_helper"):
        test_notebooks_use_only_public_names(path)


COPY_MARK = re.compile(r"^# The same code as (ftkit/\S+\.py)", re.M)


def copy_differences(path) -> tuple[int, list[str]]:
    """(definitions compared, those that differ) for every cell marked as a copy of an ftkit module: each class and
    function the cell defines, and each constant the module also defines, must be that module's text exactly."""
    compared, differ = 0, []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        mark = COPY_MARK.search(source) if cell["cell_type"] == "code" else None
        if not mark:
            continue
        module_source = (nb.ROOT / mark.group(1)).read_text()
        module_nodes = {}
        for node in ast.parse(module_source).body:
            for name in _defined_names(node):
                module_nodes[name] = ast.get_source_segment(module_source, node)
        for node in ast.parse(source).body:
            for name in _defined_names(node):
                if isinstance(node, ast.Assign) and name not in module_nodes:
                    continue  # the cell's own use, e.g. levels = nf4_levels()
                compared += 1
                if ast.get_source_segment(source, node) != module_nodes.get(name):
                    differ.append(f"{path.name}: {name} differs from {mark.group(1)}")
    return compared, differ


def _defined_names(node) -> list[str]:
    if isinstance(node, ast.ClassDef | ast.FunctionDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


def test_teaching_code_in_notebooks_is_the_tested_copy():
    """LoRALinear (1.1) and the NF4 levels (1.2) are written out where the learner reads them, and unit-tested in
    ftkit: the two stay the same text."""
    compared, differ = 0, []
    for path in NOTEBOOKS:
        n, d = copy_differences(path)
        compared, differ = compared + n, differ + d
    assert compared == 4, "LoRALinear, NF4_OFFSET, nf4_levels and KeepCheckpoints should be compared"
    assert differ == []


def test_the_copy_check_catches_an_edited_copy(tmp_path):
    path = next(p for p in NOTEBOOKS if p.name == "01_lora_from_scratch.ipynb")
    edited = tmp_path / path.name
    edited.write_text(path.read_text().replace("self.scaling = alpha / r", "self.scaling = alpha / r ** 0.5"))
    assert copy_differences(edited) == (1, [f"{path.name}: LoRALinear differs from ftkit/chapters/methods/lora.py"])
