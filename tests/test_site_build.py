"""docs/build_site.py without Sphinx or a browser: run times from pytest's report, the theory's page order, the banner."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_site)

RUN = {"profile": "ci", "machine": "a 2-core CPU", "date": "2026-11-29", "seconds": {}}


def test_notebook_seconds_from_either_junit_family(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="build.executed.notebooks.00_start_here.ipynb" name="00_start_here.ipynb" time="42.14"/>'
        '<testcase file="build/executed/notebooks/01_methods/01_lora.ipynb" classname="x" name="y" time="21"/>'
        '<testcase classname="tests.test_x" name="test_y" time="1"/>'
        '</testsuite></testsuites>')
    assert build_site.notebook_seconds(report) == {"notebooks/00_start_here.ipynb": 42.1,
                                                   "notebooks/01_methods/01_lora.ipynb": 21.0}


def test_pages_follow_the_theory(tmp_path):
    for page in ["README.md", "theory.md", "notebooks/00_start_here.ipynb", "notebooks/02_hyperparameters/README.md",
                 "notebooks/02_hyperparameters/01_lr.ipynb", "notebooks/01_methods/README.md",
                 "notebooks/01_methods/02_nf4.ipynb", "notebooks/01_methods/01_lora.ipynb", "colab/capstone.ipynb"]:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("# Chapter\n")
    order = build_site.chapters(tmp_path)
    assert [pages for _, pages in order] == [
        ["README", "theory", "notebooks/00_start_here"],
        ["notebooks/01_methods/README", "notebooks/01_methods/01_lora", "notebooks/01_methods/02_nf4"],
        ["notebooks/02_hyperparameters/README", "notebooks/02_hyperparameters/01_lr"],
        ["colab/capstone"]]
    index = build_site.index_page(RUN, order)
    assert index.count("```{toctree}") == 4 and "`ci` profile on a 2-core CPU, 2026-11-29" in index


def test_banner_names_the_run_and_links_colab():
    url = "https://colab.research.google.com/github/o/r/blob/main/notebooks/00_start_here.ipynb"
    text = build_site.banner(RUN, 42.4, url)
    assert "in 42 s with the `ci` profile on a 2-core CPU, 2026-11-29" in text and f"[Open in Colab]({url})" in text
    assert "Open in Colab" not in build_site.banner(RUN, None, None)


def test_headers_take_the_measured_times_and_keep_the_colab_estimate(tmp_path):
    import json

    header = ("# 1.1 · LoRA\n\n**Expected run time** (whole notebook): CPU, 2 cores, `ci` profile: 21 s; `cpu` profile: "
              "not measured yet.\nColab T4: about 1 minute — *an estimate*.\n\nMore text.")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": header.splitlines(keepends=True)}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "notebooks" / "01_methods" / "01_lora.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(nb))
    runs = []
    for profile, seconds in (("ci", 23.1), ("cpu", 57.4)):
        runs.append(tmp_path / f"{profile}.json")
        runs[-1].write_text(json.dumps({**RUN, "profile": profile,
                                        "seconds": {"notebooks/01_methods/01_lora.ipynb": seconds}}))
    assert build_site.headers(runs, tmp_path) == ["notebooks/01_methods/01_lora.ipynb"]
    text = "".join(json.loads(path.read_text())["cells"][0]["source"])
    assert ("**Expected run time** (whole notebook): CPU: `ci` profile 23 s, `cpu` profile 57 s (measured by nbmake "
            "under `make test` / `make site` on a 2-core CPU, 2026-11-29).\nColab T4: about 1 minute") in text
    assert "not measured yet" not in text and text.endswith("More text.")
    assert build_site.headers(runs, tmp_path) == []  # already up to date


def test_headers_say_when_notebooks_ran_side_by_side():
    side_by_side = {**RUN, "workers": 2, "threads": 1, "seconds": {"notebooks/a.ipynb": 80.0}}
    assert build_site.run_time_sentence([side_by_side], "notebooks/a.ipynb") == (
        "CPU: `ci` profile 80 s (measured by nbmake under `make test` / `make site` on a 2-core CPU, 2026-11-29, "
        "2 notebooks at a time on 1 core each, chapters 3 and 5 beside them).\n")
    alone = {**RUN, "workers": 1, "threads": 2, "seconds": {"notebooks/a.ipynb": 60.0}}
    assert "at a time" not in build_site.run_time_sentence([alone], "notebooks/a.ipynb")


def test_record_reads_every_pytest_of_the_run(tmp_path):
    def junit(name, notebook, seconds):
        (tmp_path / name).write_text(f'<testsuites><testsuite><testcase file="{notebook}" time="{seconds}"/>'
                                     '</testsuite></testsuites>')

    junit("junit.xml", "notebooks/00_start_here.ipynb", 12.0)
    junit("junit-ordered.xml", "notebooks/03_overfitting/01_see_it.ipynb", 34.0)  # chapters 3 and 5: their own pytest
    run = build_site.record(tmp_path, "ci", workers=2, threads=1)
    assert run["seconds"] == {"notebooks/00_start_here.ipynb": 12.0, "notebooks/03_overfitting/01_see_it.ipynb": 34.0}


def _notebook_with(*shown):
    """An executed notebook whose outputs are the display_data that ftkit.show writes for these verdicts."""
    outputs = []
    for v in shown:
        data, metadata = v._repr_mimebundle_()
        outputs.append({"output_type": "display_data", "data": data, "metadata": metadata})
    return {"cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}


def test_the_claims_page_lists_every_claim_with_the_outcome_its_notebook_showed(tmp_path):
    import json

    import ftkit
    from ftkit.core.claims import load_claims

    claims = load_claims()
    own = claims["1.speed"].notebook
    (tmp_path / own).parent.mkdir(parents=True)
    (tmp_path / own).write_text(json.dumps(_notebook_with(ftkit.verdict("1.speed", None, "×1.15 within the noise"))))
    other = tmp_path / "notebooks" / "00_other.ipynb"  # shows 1.speed too (first in order) and 2.warmup
    other.write_text(json.dumps(_notebook_with(ftkit.verdict("1.speed", True, "elsewhere"),
                                               ftkit.verdict("2.warmup", False, "no lower peak"))))
    found = build_site.collect_verdicts(tmp_path)
    assert found["1.speed"] == [{"outcome": "not settled at this size", "detail": "×1.15 within the noise",
                                 "notebook": own}]  # the claim's own notebook wins over the one shown first
    assert found["2.warmup"][0]["outcome"] == "differs here" and set(found) == {"1.speed", "2.warmup"}
    page = build_site.claims_page({"profile": "ci", "date": "2026-12-05", "verdicts": found},
                                  [{"profile": "cpu", "verdicts": {"1.speed": [{"outcome": "differs here"}]}}])
    for claim in claims:  # every claim has its block, shown or not
        assert f'id="claim-{claim}"' in page
    block = next(line for line in page.splitlines() if 'id="claim-1.speed"' in line)
    assert 'class="outcome not-settled">not settled at this size</span> ×1.15 within the noise' in block
    assert "cpu profile: differs here" in block and own.removesuffix(".ipynb") + ".html" in block
    assert "not shown in this build" in next(line for line in page.splitlines() if 'id="claim-4.cluster"' in line)
    assert "This build: 0 as the theory says, 1 differs here, 1 not settled at this size." in page
