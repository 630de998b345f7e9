"""The course site in a real browser: headless Chromium (Debian's package; no browser download) opens the built HTML
and checks what a reader sees: the index links every chapter, each notebook page shows its figures (loaded, with a
size) and its computed takeaways, a banner and an "Open in Colab" link. Screenshots go to outputs/site/.

Needs a built site: `make site` (cpu profile) or `make test` (ci) builds it first; without one this module skips.
"""

import json
import os
from pathlib import Path

import pytest
from browser import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("FTKIT_SITE", ROOT / "build" / "site"))
SOURCE = SITE.with_name(SITE.name + "-src")  # the executed notebooks the site was built from
SHOTS = ROOT / "outputs" / "site"

if not (SITE / "index.html").exists():
    pytest.skip(f"no built site at {SITE}: run `make site` or `make test` first", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.fail("The site test needs headless Chromium: apt-get install chromium-headless-shell (Debian), "
                    "or set CHROMIUM to a Chromium/Chrome binary.")
    chrome = Chromium(executable)
    yield chrome
    chrome.close()


def _notebooks() -> list[Path]:
    return sorted(p.relative_to(SOURCE) for d in ("notebooks", "colab") for p in (SOURCE / d).rglob("*.ipynb"))


def _chapter_readmes() -> list[Path]:
    return sorted(p.relative_to(SOURCE) for p in (SOURCE / "notebooks").glob("*/README.md"))


def _page(source: Path) -> str:
    return (SITE / source.with_suffix(".html")).resolve().as_uri()


def _expected(source: Path) -> dict:
    """What the executed notebook holds: how many figures, and the first line its takeaways cell printed."""
    cells = json.loads((SOURCE / source).read_text())["cells"]
    figures = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
    takeaway = None
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and "## Takeaways" in "".join(cell["source"]):
            printed = "".join(t for c in cells[i + 1:] if c["cell_type"] == "code" for o in c.get("outputs", [])
                              for t in o.get("text", []))
            takeaway = next((line.strip() for line in printed.splitlines() if line.strip()), "")
            break
    return {"figures": figures, "takeaway": takeaway}


READ_PAGE = """(() => {
  const main = document.querySelector('main') || document.body;
  const figures = [...main.querySelectorAll('.cell_output img')].map(i => {
    const box = i.getBoundingClientRect();
    return {src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0,
            width: box.width, height: box.height};
  });
  const heading = [...main.querySelectorAll('h2')].find(h => h.innerText.includes('Takeaways'));
  let takeaways = null;
  if (heading) {
    heading.scrollIntoView();
    const section = heading.closest('section');
    takeaways = [...section.querySelectorAll('.cell_output')].map(o => o.innerText).join('\\n');
  }
  const colab = [...document.querySelectorAll('a')].filter(a =>
    a.href.startsWith('https://colab.research.google.com/github/') && a.innerText.includes('Open in Colab'));
  return {figures, takeaways, text: document.body.innerText, colab: colab.map(a => a.href)};
})()"""


def test_index_links_every_chapter_and_notebook(browser):
    browser.open((SITE / "index.html").resolve().as_uri())
    hrefs = browser.evaluate("[...document.querySelectorAll('main a')].map(a => a.href.split('#')[0])")
    browser.screenshot(SHOTS / "index.png")
    wanted = [_page(p) for p in _chapter_readmes() + _notebooks()]
    assert len(wanted) >= 2
    assert [page for page in wanted if page not in hrefs] == []
    assert "profile" in browser.evaluate("document.body.innerText")  # the banner of every page


@pytest.mark.parametrize("source", _notebooks(), ids=str)
def test_notebook_page_shows_its_figures_and_takeaways(browser, source):
    expected = _expected(source)
    browser.open(_page(source))
    shot = SHOTS / source.with_suffix("").as_posix().replace("/", "__")
    browser.screenshot(shot.with_name(shot.name + ".png"))  # the top: title, badge, banner
    if browser.evaluate("(() => { const i = document.querySelector('main .cell_output img');"
                        " if (i) i.scrollIntoView(); return !!i; })()"):
        browser.screenshot(shot.with_name(shot.name + "__figure.png"))
    page = browser.evaluate(READ_PAGE)
    browser.screenshot(shot.with_name(shot.name + "__takeaways.png"))  # READ_PAGE scrolled to them
    assert "Numbers on this page" in page["text"] and "profile" in page["text"]
    assert any(href.endswith(source.as_posix()) for href in page["colab"]), f"no 'Open in Colab' link: {page['colab']}"
    shown = [f for f in page["figures"] if f["loaded"] and f["width"] > 0 and f["height"] > 0]
    assert len(shown) == len(page["figures"]) >= expected["figures"], page["figures"]
    if expected["takeaway"] is not None:
        assert expected["takeaway"], "the executed notebook's takeaways cell printed nothing"
        assert page["takeaways"] and expected["takeaway"] in page["takeaways"]


READ_CLAIMS = """(() => [...document.querySelectorAll('main div.ftkit-claim')].map(d => ({
  id: d.querySelector('code').innerText,
  outcomes: [...d.querySelectorAll('span.outcome')].map(s => [s.innerText, getComputedStyle(s).color]),
  link: d.querySelector('a') && d.querySelector('a').href})))()"""


def test_claims_page_lists_every_claim_with_its_outcome_in_colour(browser):
    from ftkit.core.claims import OUTCOMES, load_claims

    browser.open((SITE / "index.html").resolve().as_uri())
    assert (SITE / "claims.html").resolve().as_uri() in browser.evaluate(
        "[...document.querySelectorAll('main a')].map(a => a.href.split('#')[0])")  # in the front matter
    browser.open((SITE / "claims.html").resolve().as_uri())
    browser.screenshot(SHOTS / "claims.png")
    shown = browser.evaluate(READ_CLAIMS)
    assert [c["id"] for c in shown] == list(load_claims())
    colours = {text: colour for c in shown for text, colour in c["outcomes"] if text in OUTCOMES}
    assert len(set(colours.values())) == len(colours) >= 2  # each outcome its own colour
    executed = json.loads((ROOT / "build" / "executed" / "claims.json").read_text())["verdicts"] \
        if (ROOT / "build" / "executed" / "claims.json").exists() else {}
    for claim in shown:
        assert claim["link"].endswith(load_claims()[claim["id"]].notebook.removesuffix(".ipynb") + ".html")
        if claim["id"] in executed:  # the outcome the notebook showed is the one the page shows
            assert [t for t, _ in claim["outcomes"]] == [v["outcome"] for v in executed[claim["id"]]]


def test_some_pages_have_figures():
    assert sum(_expected(p)["figures"] for p in _notebooks()) > 0


TYPESET = """(async () => {
  const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
  for (let i = 0; i < 100 && !ready(); i++) await new Promise(r => setTimeout(r, 100));
  if (!ready()) return {loaded: false, formulas: 0, scripts: []};
  await MathJax.startup.promise;
  return {loaded: true, formulas: document.querySelectorAll('main mjx-container').length,
          scripts: [...document.scripts].map(s => s.src).filter(s => s.toLowerCase().includes('mathjax'))};
})()"""


def test_formulas_render_offline(browser):
    """MathJax comes with the site (sphinx-mathjax-offline), so formulas typeset with no network (the browser has none)."""
    source = next(p for p in _notebooks() if "lora_from_scratch" in p.name)  # 1.1: W x + (alpha/r) B A x
    browser.open(_page(source))
    math = browser.evaluate(TYPESET)
    assert math["loaded"], "MathJax did not load: the site must carry it (docs/conf.py: sphinx-mathjax-offline)"
    assert math["scripts"] and all(s.startswith("file://") for s in math["scripts"]), math["scripts"]
    assert math["formulas"] > 0
    browser.evaluate("document.querySelector('main mjx-container').scrollIntoView()")
    browser.screenshot(SHOTS / "formulas.png")
