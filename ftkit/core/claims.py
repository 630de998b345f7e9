"""The claims the course tests (CLAIMS.md, shipped with the package) and the one verdict type every chapter returns.

Used by every chapter's verdicts.py and the notebooks: `print(ftkit.verdict("1.speed", holds, detail))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "CLAIMS.md"  # shipped with the package (ftkit/CLAIMS.md)
# The outcomes of a verdict: the measurement agrees with the course text, or it differs, or it cannot decide at this
# size (the difference is within the run's noise, or the experiment is too small).
AGREES, DIFFERS, NOT_SETTLED = "as the theory says", "differs here", "not settled at this size"
OUTCOMES = (AGREES, DIFFERS, NOT_SETTLED)


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
