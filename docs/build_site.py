"""Build the course site: every notebook with its outputs, as static HTML, in the order of the theory.

The notebooks are executed once, by nbmake, as copies under build/executed (`make notebooks` in the ci profile,
`make site` in PROFILE, default cpu); this script never runs them again:

    python docs/build_site.py record build/executed --profile ci   # after nbmake: which profile, machine, date, times
    python docs/build_site.py html build/executed build/site        # assemble the pages and run Sphinx (myst-nb)
    python docs/build_site.py headers ci-run.json cpu-run.json      # put measured times in every notebook's header
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUN_FILE = "run.json"
VERDICTS_FILE = "claims.json"  # the verdicts the executed notebooks showed, by claim id (written by `record`)
# The Colab badge that `python -m ftkit sync-notebooks` puts in every notebook's first cell.
COLAB_URL_RE = re.compile(r"\(https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^)]+\)")


def notebook_seconds(junit_xml: Path) -> dict[str, float]:
    """Run time of each notebook (path relative to the executed folder) from pytest's JUnit report."""
    seconds = {}
    for case in ET.parse(junit_xml).iter("testcase"):
        # xunit1 gives the file; xunit2 only a dotted classname (build.executed.notebooks.00_start_here.ipynb).
        path = case.get("file") or case.get("classname", "").removesuffix(".ipynb").replace(".", "/") + ".ipynb"
        match = re.search(r"(?:^|/)((?:notebooks|colab)/.+\.ipynb)$", path)
        if match:
            seconds[match.group(1)] = round(float(case.get("time", 0)), 1)
    return seconds


def record(executed: Path, profile: str, workers: int = 1, threads: int | None = None, beside: str = "") -> dict:
    """Write run.json beside the executed notebooks: what produced their numbers, and how they ran (how many notebooks
    at a time, on how many threads each: two one-core kernels side by side take longer each than one kernel alone).
    Each pytest of the run wrote a junit*.xml (chapters 3 and 5 have their own, see scripts/execute_notebooks.sh)."""
    seconds = {}
    for junit in sorted(executed.glob("junit*.xml")):
        seconds |= notebook_seconds(junit)
    from ftkit.core.bench import machine

    run = {"profile": profile, "machine": machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
           "python": platform.python_version(), "workers": workers, "threads": threads or os.cpu_count(),
           "beside": beside, "seconds": seconds}
    (executed / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    verdicts = {"profile": profile, "date": run["date"], "verdicts": collect_verdicts(executed)}
    (executed / VERDICTS_FILE).write_text(json.dumps(verdicts, indent=1, ensure_ascii=False) + "\n")
    return run


def collect_verdicts(executed: Path) -> dict[str, list[dict]]:
    """{claim id: [{outcome, detail, notebook}, ...]}: the verdicts the executed notebooks showed (ftkit.show records
    each in its output's metadata). A claim shown in several notebooks keeps those of the notebook CLAIMS.md names."""
    from ftkit.core.claims import VERDICT_METADATA, load_claims

    claims, found = load_claims(), {}
    for path in sorted([*executed.glob("notebooks/**/*.ipynb"), *executed.glob("colab/*.ipynb")]):
        notebook = path.relative_to(executed).as_posix()
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                shown = output.get("metadata", {}).get(VERDICT_METADATA)
                if not shown or shown["claim"] not in claims:
                    continue
                kept = found.setdefault(shown["claim"], [])
                if kept and kept[0]["notebook"] != notebook:  # shown before in another notebook
                    if claims[shown["claim"]].notebook != notebook:
                        continue
                    kept.clear()  # the claim's own notebook wins
                kept.append({"outcome": shown["outcome"], "detail": shown["detail"], "notebook": notebook})
    return found


def claims_page(verdicts: dict, others: list[dict]) -> str:
    """The site's claims page: every claim of CLAIMS.md with this build's outcome and numbers, linked to its notebook,
    and the outcome of each other profile's build (results/claims-<profile>.json) beside it."""
    from ftkit.core.claims import DIFFERS, NOT_SETTLED, OUTCOMES, load_claims

    css = {OUTCOMES[0]: "agrees", DIFFERS: "differs", NOT_SETTLED: "not-settled"}
    counts = {o: sum(v[0]["outcome"] == o for v in verdicts["verdicts"].values() if v) for o in OUTCOMES}
    lines = ["# Every claim, decided", "",
             f"Each claim of the course text that a notebook tests (the course's `CLAIMS.md`), with the outcome this "
             f"build measured (`{verdicts['profile']}` profile, {verdicts['date']}) and the numbers that decided it. "
             f"<span class=\"outcome agrees\">as the theory says</span> when the measurement agrees, "
             f"<span class=\"outcome differs\">differs here</span> when it does not, "
             f"<span class=\"outcome not-settled\">not settled at this size</span> when the difference is within the "
             f"run's own noise (paired seeds or interleaved rounds, 2 standard errors) or the run is too small to tell.",
             "", "This build: " + ", ".join(f"{n} {o}" for o, n in counts.items()) + ".", ""]
    chapter = None
    for claim in load_claims().values():
        if claim.id.split(".")[0] != chapter:
            chapter = claim.id.split(".")[0]
            lines += [f"## Chapter {chapter}", ""]
        shown = verdicts["verdicts"].get(claim.id, [])
        page = claim.notebook.removesuffix(".ipynb") + ".html"
        outcomes = "".join(f'<span class="outcome {css[v["outcome"]]}">{escape(v["outcome"])}</span> '
                           f'{escape(v["detail"])}<br>' for v in shown) or \
            '<span class="outcome missing">not shown in this build</span><br>'
        elsewhere = " ".join(f'<span class="elsewhere">{escape(o["profile"])} profile: '
                             + ", ".join(escape(v["outcome"]) for v in o["verdicts"].get(claim.id, [])) + "</span>"
                             for o in others if o["verdicts"].get(claim.id))
        lines += [f'<div class="ftkit-claim" id="claim-{escape(claim.id)}"><code>{escape(claim.id)}</code> '
                  f'<q>{escape(claim.text)}</q><br>{outcomes}{elsewhere}'
                  f'<a href="{escape(page)}">{escape(claim.notebook)}</a></div>', ""]
    return "\n".join(lines)


def chapters(book: Path) -> list[tuple[str, list[str]]]:
    """(caption, pages) in the theory's order: start, numbered chapter folders, capstone. Pages have no suffix."""
    def page(path: Path) -> str:
        return path.relative_to(book).with_suffix("").as_posix()

    order = [("The course", [p for p in ["README", "theory", "claims", "notebooks/README", "WORKSHOP"]
                             if (book / f"{p}.md").exists()]
              + [page(p) for p in sorted(book.glob("notebooks/*.ipynb"))])]
    for folder in sorted(p for p in book.glob("notebooks/[0-9][0-9]_*") if p.is_dir()):
        readme = folder / "README.md"
        caption = readme.read_text().splitlines()[0].lstrip("# ").strip() if readme.exists() else folder.name
        order.append((caption, ([page(readme)] if readme.exists() else [])
                      + [page(p) for p in sorted(folder.glob("*.ipynb"))]))
    order.append(("Capstone", [page(p) for p in sorted(book.glob("colab/*.ipynb"))]))
    return [(caption, pages) for caption, pages in order if pages]


def banner(run: dict, seconds: float | None, colab_url: str | None) -> str:
    """The note at the top of a notebook page: where its numbers come from, and where to run it."""
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    text = (f"**Numbers on this page** come from running this notebook{took} with the `{run['profile']}` profile "
            f"on {run['machine']}, {run['date']}.")
    if colab_url:
        text += f" [Open in Colab]({colab_url}) to run it yourself, on a free T4 GPU."
    return f":::{{note}}\n{text}\n:::"


def add_banner(notebook: Path, run: dict, seconds: float | None) -> None:
    """Insert the banner as the second cell (after the title and its badge) of an executed copy."""
    nb = json.loads(notebook.read_text())
    first = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
    url = COLAB_URL_RE.search(first)
    cell = {"cell_type": "markdown", "metadata": {}, "source": banner(run, seconds, url and url.group(0)[1:-1])}
    if any("id" in c for c in nb["cells"]):  # nbformat 4.5+ wants an id on every cell
        cell["id"] = "site-banner"
    nb["cells"].insert(1, cell)
    notebook.write_text(json.dumps(nb, indent=1))


def index_page(run: dict, order: list[tuple[str, list[str]]]) -> str:
    """The front page: what the site is, then one table of contents per chapter, in the theory's order."""
    total = sum(run["seconds"].values())
    lines = ["# Fine-tuning LLMs, measured", "",
             "Full fine-tuning, LoRA and QLoRA, the hyperparameters that matter, and how to spot and prevent "
             "overfitting: every notebook of the course with the outputs of one run, so you can read it without "
             "running it. Open any notebook in Colab from its page to run it yourself.", "",
             f"This build ran every notebook once with the `{run['profile']}` profile on {run['machine']}, "
             f"{run['date']} ({total / 60:.1f} min in all).", ""]
    for caption, pages in order:
        lines += ["```{toctree}", f":caption: {caption}", ":maxdepth: 1", "", *pages, "```", ""]
    return "\n".join(lines)


# The files of the course: notebooks, chapter READMEs and images beside them. Not what a run left there (adapters
# saved with their own README.md, checkpoints, outputs/).
PAGES = ("notebooks/*.ipynb", "notebooks/README.md", "notebooks/[0-9][0-9]_*/*.ipynb", "notebooks/[0-9][0-9]_*/README.md",
         "colab/*.ipynb", "notebooks/[0-9][0-9]_*/*.png", "notebooks/[0-9][0-9]_*/*.svg")


def assemble(executed: Path, book: Path) -> dict:
    """Copy the executed notebooks, the READMEs and the Sphinx config into one source folder, with banners."""
    run_file = executed / RUN_FILE
    if not run_file.exists():
        raise SystemExit(f"No executed notebooks in {executed}: run `make notebooks` (ci) or `make site` first.")
    run = json.loads(run_file.read_text())
    shutil.rmtree(book, ignore_errors=True)
    for source in sorted({p for pattern in PAGES for p in executed.glob(pattern)}):
        (book / source.relative_to(executed)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, book / source.relative_to(executed))
    for name in ("README.md", "theory.md", "WORKSHOP.md"):
        if (ROOT / name).exists():
            text = (ROOT / name).read_text()
            # A link to a chapter folder becomes a link to its README page.
            text = re.sub(r"\]\((notebooks/[^)\s]+?)/\)", r"](\1/README.md)", text)
            (book / name).write_text(text)
    shutil.copy(DOCS / "conf.py", book / "conf.py")
    shutil.copytree(DOCS / "_static", book / "_static")
    for notebook in sorted(book.rglob("*.ipynb")):
        add_banner(notebook, run, run["seconds"].get(notebook.relative_to(book).as_posix()))
    verdicts = executed / VERDICTS_FILE
    verdicts = json.loads(verdicts.read_text()) if verdicts.exists() else {"profile": run["profile"],
                                                                           "date": run["date"], "verdicts": {}}
    others = [json.loads(p.read_text()) for p in sorted((ROOT / "results").glob("claims-*.json"))]
    (book / "claims.md").write_text(claims_page(verdicts, [o for o in others if o["profile"] != verdicts["profile"]]))
    order = chapters(book)
    (book / "index.md").write_text(index_page(run, order))
    slug = next((m.group(1) for p in book.rglob("*.ipynb") for m in [COLAB_URL_RE.search(p.read_text())] if m), "")
    (book / RUN_FILE).write_text(json.dumps({**run, "repository": slug}, indent=2))
    return run


def html(executed: Path, out: Path) -> Path:
    """Assemble the pages next to `out` and build them with Sphinx; returns the index page."""
    book = out.with_name(out.name + "-src")
    assemble(executed, book)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(out.with_name(out.name + "-doctrees")),
           str(book), str(out)]
    subprocess.run(cmd, check=True)
    print(f"site: {out / 'index.html'}")
    return out / "index.html"


# A notebook header's CPU run-time sentence, up to where its Colab estimate starts (that part is kept).
RUN_TIME_RE = re.compile(r"(\*\*Expected run time\*\*(?: \(whole notebook\))?:) CPU.*?[.;]\s+(?=Colab)", re.S)


def run_time_sentence(runs: list[dict], notebook: str) -> str | None:
    """"CPU: `ci` profile 21 s, `cpu` profile 57 s (measured ...).\n" from run.json files; None if none has it."""
    timed = [(run, run["seconds"][notebook]) for run in runs if notebook in run["seconds"]]
    if not timed:
        return None
    untimed = sorted({run["profile"] for run in runs} - {run["profile"] for run, _ in timed})
    times = ", ".join([f"`{run['profile']}` profile {seconds:.0f} s" for run, seconds in timed]
                      + [f"`{profile}` profile not measured yet" for profile in untimed])
    where = "; ".join(sorted({f"{run['machine']}, {run['date']}{how(run)}" for run, _ in timed}))
    return f"CPU: {times} (measured by nbmake under `make test` / `make site` on {where}).\n"


def how(run: dict) -> str:
    """", 2 notebooks at a time on 1 core each, chapters 3 and 5 beside them" for a run.json of notebooks run side by side
    (chapters 3 and 5 each add one kernel while they run: scripts/execute_notebooks.sh), and what else ran beside them
    (make test: the unit tests and the T4 lane); "" for one at a time."""
    workers = run.get("workers", 1)
    others = f" and {run['beside']}" if run.get("beside") else ""
    return (f", {workers} notebooks at a time on {run.get('threads', 1)} core each, chapters 3 and 5{others} beside them"
            if workers > 1 else "")


def headers(run_files: list[Path], root: Path = ROOT) -> list[str]:
    """Rewrite the CPU part of each notebook's "Expected run time" with the measured seconds; returns the notebooks
    changed. The committed notebooks stay clean: only their first markdown cell's text changes."""
    runs = [json.loads(Path(f).read_text()) for f in run_files]
    changed = []
    for path in sorted([*root.glob("notebooks/**/*.ipynb"), *root.glob("colab/*.ipynb")]):
        notebook = path.relative_to(root).as_posix()
        sentence = run_time_sentence(runs, notebook)
        nb = json.loads(path.read_text())
        cell = nb["cells"][0]
        text = "".join(cell["source"])
        new = RUN_TIME_RE.sub(lambda m, s=sentence: f"{m.group(1)} {s}", text, count=1) if sentence else text
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(notebook)
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write run.json beside the notebooks nbmake executed")
    rec.add_argument("executed", type=Path)
    rec.add_argument("--profile", required=True)
    rec.add_argument("--workers", type=int, default=1, help="notebooks run at a time (pytest-xdist's -n)")
    rec.add_argument("--threads", type=int, help="threads of each notebook's kernel (OMP_NUM_THREADS)")
    rec.add_argument("--beside", default="", help="what else ran at the same time (make test: the unit tests, ...)")
    build = sub.add_parser("html", help="build the site from the executed notebooks")
    build.add_argument("executed", type=Path)
    build.add_argument("out", type=Path)
    head = sub.add_parser("headers", help="write measured times (run.json files) into the notebooks' headers")
    head.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "record":
        print(json.dumps(record(args.executed, args.profile, args.workers, args.threads, args.beside), indent=2))
    elif args.command == "headers":
        print("\n".join(headers(args.runs)) or "no header changed")
    else:
        html(args.executed, args.out)


if __name__ == "__main__":
    main()
