"""The course site in a real browser: headless Chromium (Debian's package; no browser download) opens the built HTML
and checks what a reader sees: the index links every chapter, each notebook page shows its figures (loaded, with a
size) and its computed takeaways, a banner and an "Open in Colab" link. Screenshots go to outputs/site/.

Needs a built site: `make site` (cpu profile) or `make test` (ci) builds it first; without one this module skips.
"""

import base64
import json
import os
import select
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("FTKIT_SITE", ROOT / "build" / "site"))
SOURCE = SITE.with_name(SITE.name + "-src")  # the executed notebooks the site was built from
SHOTS = ROOT / "outputs" / "site"
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")

if not (SITE / "index.html").exists():
    pytest.skip(f"no built site at {SITE}: run `make site` or `make test` first", allow_module_level=True)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): stdlib only, no driver."""

    def __init__(self, executable: str):
        chrome_in, self._to_chrome = os.pipe()
        self._from_chrome, chrome_out = os.pipe()

        def pipes_on_3_and_4():
            os.dup2(chrome_in, 3)
            os.dup2(chrome_out, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--window-size=1280,900", "--hide-scrollbars",
             # Nothing leaves the machine: the site must read well offline (a workshop room without network).
             "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"],
            preexec_fn=pipes_on_3_and_4, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(chrome_in)
        os.close(chrome_out)
        self._id, self._buffer, self.events = 0, b"", []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)

    def _read(self, timeout: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], timeout)
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30) -> None:
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(timeout))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"]))
        return path

    def close(self) -> None:
        os.close(self._to_chrome)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._from_chrome)


@pytest.fixture(scope="module")
def browser():
    executable = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
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
