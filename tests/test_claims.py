"""CLAIMS.md and ftkit.verdict: every verdict names a claim that has a row, in the course's words."""

import re
from pathlib import Path

import pytest

import ftkit
from ftkit.core import claims
from ftkit.chapters.methods.verdicts import ROW_CLAIMS

ROOT = Path(__file__).resolve().parent.parent


def test_verdict_wording_and_unknown_id():
    assert str(ftkit.verdict("1.speed", True, "LoRA is faster")) == "as the theory says: LoRA is faster"
    assert str(ftkit.verdict("1.speed", False, "LoRA is not faster")) == "differs here: LoRA is not faster"
    unsure = ftkit.verdict("1.speed", None, "within the noise")
    assert (unsure.claim, unsure.outcome, unsure.holds) == ("1.speed", "not settled at this size", False)
    assert str(unsure) == "not settled at this size: within the noise"
    with pytest.raises(ValueError, match="Unknown claim id '1.no-such-claim': add a row for it to CLAIMS.md"):
        ftkit.verdict("1.no-such-claim", True, "anything")


def test_claims_md_has_chapter_one_in_the_course_words():
    ids = set(claims.load_claims())
    assert {"1.mechanism", "1.vram", "1.speed", "1.storage", "1.use-case", "1.summary-full", "1.summary-lora",
            "1.summary-qlora"} <= ids
    theory = (ROOT / "theory.md").read_text().replace("**", "").lower()
    for claim in claims.load_claims().values():
        assert (ROOT / claim.notebook).exists(), claim
        for quoted in re.findall(r'"([^"]{12,})"', claim.text):  # what is quoted is the course's text, verbatim
            assert quoted.replace("**", "").lower() in theory, (claim.id, quoted)


def test_theory_md_is_the_course_text():
    shared = ROOT.parent / "shared" / "course" / "theory.md"  # the course text, where the checkout has it beside it
    if shared.exists():
        assert (ROOT / "theory.md").read_text() == shared.read_text()
    assert (ROOT / "theory.md").read_text().startswith("# Theory: Fine-tuning LLMs")


def test_a_duplicate_id_is_refused():
    row = "| 1.x | a claim | nb.ipynb | a rule |"
    assert set(claims.parse_claims("| id | claim | notebook | what |\n| --- | --- | --- | --- |\n" + row)) == {"1.x"}
    with pytest.raises(ValueError, match="twice"):
        claims.parse_claims(row + "\n" + row)


def test_every_claim_id_used_in_code_and_notebooks_has_a_row():
    used = set(ROW_CLAIMS.values())
    pattern = re.compile(r"""verdict\(\s*\\?["']([0-9][^"'\\]*)\\?["']""")
    for path in [*ROOT.glob("ftkit/**/*.py"), *ROOT.glob("notebooks/**/*.ipynb"), *ROOT.glob("colab/*.ipynb")]:
        used |= set(pattern.findall(path.read_text()))
    assert used, "no verdict found: the pattern above is broken"
    missing = used - set(claims.load_claims())
    assert not missing, f"verdicts for claims with no row in CLAIMS.md: {sorted(missing)}"
