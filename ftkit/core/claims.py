"""The claims the course tests, read from CLAIMS.md, and the one way a verdict on one of them is written.

Used by ftkit.compare's verdicts and every chapter notebook: `print(ftkit.verdict("1.speed", holds, detail))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "CLAIMS.md"  # shipped with the package (ftkit/CLAIMS.md)
AGREES, DIFFERS = "as the theory says", "differs here"


@dataclass(frozen=True)
class Claim:
    """One row of CLAIMS.md."""

    id: str
    text: str  # the course's words
    notebook: str  # the notebook that tests it
    decided_by: str  # what decides the verdict


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


def verdict(claim_id: str, holds: bool, detail: str) -> str:
    """"as the theory says: <detail>" when the measurement agrees with the claim, else "differs here: <detail>".

    Raises ValueError for a claim id that has no row in CLAIMS.md (add the row first)."""
    claims = load_claims()
    if claim_id not in claims:
        raise ValueError(f"Unknown claim id {claim_id!r}: add a row for it to CLAIMS.md ({CLAIMS_FILE}). Known ids: "
                         f"{', '.join(claims)}")
    return f"{AGREES if holds else DIFFERS}: {detail}"
