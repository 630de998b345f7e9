"""The claims the course tests (CLAIMS.md, shipped with the package) and the one verdict type every chapter returns.

Used by every chapter's verdicts.py and the notebooks: `print(ftkit.verdict("1.speed", holds, detail))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "CLAIMS.md"  # shipped with the package (ftkit/CLAIMS.md)
# The outcomes of a verdict: the measurement agrees with the course text, or it differs, or it cannot decide at this
# size (the difference is within the run's noise, or the experiment is too small).
AGREES, DIFFERS, NOT_SETTLED = "as the theory says", "differs here", "not settled at this size"
OUTCOMES = (AGREES, DIFFERS, NOT_SETTLED)
OUTCOME_COLOURS = {AGREES: "#1a7f37", DIFFERS: "#cf222e", NOT_SETTLED: "#6e7781"}  # green, red, grey
VERDICT_METADATA = "ftkit_verdict"  # the key of a displayed verdict in its notebook output's metadata


@dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md."""

    id: str
    text: str  # the course's words
    notebook: str  # the notebook that tests it
    decided_by: str  # what decides the verdict


@dataclass(frozen=True)
class Verdict:
    """A claim of CLAIMS.md decided by a measurement: its id, the outcome (one of OUTCOMES) and the numbers that decided
    it, in words. Printed as "<outcome>: <detail>"."""

    claim: str
    outcome: str
    detail: str

    def __post_init__(self):
        claims = load_claims()
        if self.claim not in claims:
            raise ValueError(f"Unknown claim id {self.claim!r}: add a row for it to CLAIMS.md ({CLAIMS_FILE}). Known "
                             f"ids: {', '.join(claims)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"A verdict's outcome is one of {OUTCOMES}, not {self.outcome!r}")

    @property
    def holds(self) -> bool:
        """True when the measurement agrees with the claim."""
        return self.outcome == AGREES

    def __str__(self) -> str:
        return f"{self.outcome}: {self.detail}"

    def line(self) -> str:
        """'<claim id> — <outcome>: <detail>': how a verdict reads on its own (printed, or in a notebook's text)."""
        return f"{self.claim} — {self}"

    def _repr_mimebundle_(self, include=None, exclude=None):
        """In a notebook: a line coloured by outcome (styled inline, so JupyterLab, Colab and the site show it alike),
        and the verdict itself in the output's metadata, from which the site builds its claims page."""
        colour = OUTCOME_COLOURS[self.outcome]
        html = (f'<div class="ftkit-verdict" data-claim="{escape(self.claim)}" data-outcome="{escape(self.outcome)}" '
                f'title="{escape(load_claims()[self.claim].text)}" style="border-left:4px solid {colour};padding:2px 8px;margin:4px 0">'
                f'<code>{escape(self.claim)}</code> <b style="color:{colour}">{escape(self.outcome)}</b>: '
                f'{escape(self.detail)}</div>')
        return {"text/plain": self.line(), "text/html": html}, {VERDICT_METADATA: self.as_dict()}

    def as_dict(self) -> dict:
        return {"claim": self.claim, "outcome": self.outcome, "detail": self.detail}


def parse_claims(markdown: str) -> dict[str, Claim]:
    """The rows of CLAIMS.md's table (`| id | claim | notebook | what decides the verdict |`), by id."""
    claims = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("id", "---"):
            continue
        if cells[0] in claims:
            raise ValueError(f"CLAIMS.md lists the claim id {cells[0]!r} twice: give each claim its own id.")
        claims[cells[0]] = Claim(*cells)
    return claims


@cache
def load_claims(path: Path = CLAIMS_FILE) -> dict[str, Claim]:
    """The claims of CLAIMS.md by id (read once)."""
    return parse_claims(path.read_text(encoding="utf-8"))


def __getattr__(name):
    if name == "CLAIMS":  # read lazily, so importing ftkit reads no file
        return load_claims()
    raise AttributeError(name)


def verdict(claim_id: str, holds: bool | None, detail: str) -> Verdict:
    """The verdict on one claim: AGREES when `holds`, DIFFERS when not, NOT_SETTLED when None (the measurement cannot
    decide). Raises ValueError for a claim id that has no row in CLAIMS.md (add the row first)."""
    return Verdict(claim_id, NOT_SETTLED if holds is None else AGREES if holds else DIFFERS, detail)


def recorded(profile: str = "cpu", start: Path | None = None) -> dict:
    """The verdicts a whole build of the course recorded in one profile (results/claims-<profile>.json, which make site
    writes), found from `start` (the working folder) up: {"profile", "date", "verdicts": {id: [{"outcome", "detail",
    "notebook"}, ...]}}, or {} when no build left one there. Chapter 5 quotes chapters 2 and 3 from it."""
    import json

    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        path = folder / "results" / f"claims-{profile}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


def show(*verdicts) -> None:
    """Show verdicts, each on its own line: Verdicts, or dicts/lists of them. In a notebook each is displayed (coloured
    by outcome, and recorded in the output for the site's claims page); elsewhere each is printed as its line()."""
    items = []
    for v in verdicts:
        items += list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, (list, tuple)) else [v]
    for v in items:
        if not isinstance(v, Verdict):
            raise TypeError(f"show() takes verdicts (ftkit.verdict(...)), not {type(v).__name__}")
    if _in_notebook():
        from IPython.display import display

        display(*items)
    else:
        for v in items:
            print(v.line())


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, nbmake), where display() reaches a front end."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
