"""Check functions for the exercises: they say what is wrong, not only that it is wrong.

A check never raises on a wrong answer (a learner's notebook keeps running); it prints a verdict and returns
True or False. Solutions notebooks assert the True. Used at the end of every notebook.
"""

from __future__ import annotations

import math


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel * 1e-9)


def check_number(answer, expected: float, *, rel: float = 0.02, name: str = "answer",
                 mistakes: dict | None = None, hint: str = "") -> bool:
    """Compare a numeric answer with the expected value (relative tolerance `rel`).

    mistakes: {wrong value: what that value means}, so a classic slip gets a specific explanation."""
    if answer is None:
        print(f"… {name}: not answered yet. {hint}".rstrip())
        return False
    try:
        value = float(answer)
    except (TypeError, ValueError):
        print(f"✗ {name}: expected a number, got {type(answer).__name__} {answer!r}.")
        return False
    if _close(value, expected, rel):
        print(f"✓ {name}: {value:,.6g} is right.")
        return True
    for wrong, meaning in (mistakes or {}).items():
        if _close(value, wrong, rel):
            print(f"✗ {name}: {value:,.6g} is what you get if {meaning}.")
            return False
    direction = "too high" if value > expected else "too low"
    ratio = value / expected if expected else math.inf
    print(f"✗ {name}: {value:,.6g} is {direction} (×{ratio:.3g} the right value). {hint}".rstrip())
    return False


def check_choice(answer, expected, *, name: str = "answer", options=None, why: dict | None = None) -> bool:
    """Compare a choice (a string such as "lora") with the expected one; `why` explains each wrong option."""
    if answer is None:
        print(f"… {name}: not answered yet" + (f"; choose one of {options}." if options else "."))
        return False
    if options is not None and answer not in options:
        print(f"✗ {name}: {answer!r} is not one of {options}.")
        return False
    if answer == expected:
        print(f"✓ {name}: {answer!r} is right.")
        return True
    print(f"✗ {name}: not {answer!r}. {(why or {}).get(answer, '')}".rstrip())
    return False
