"""One validity rule's outcome, shared by the LoadGen rules (verdict.py) and the attribution rules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's outcome; ``recommendation`` says what to change when it failed."""

    name: str
    passed: bool
    detail: str
    recommendation: str = ""
