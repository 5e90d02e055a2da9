"""The five lunar age classes (systems): the one enumeration that owns their
names, codes and boundaries (Wilhelms 1987), oldest first."""
from __future__ import annotations

import enum


class AgeClass(enum.IntEnum):
    """Lunar systems, oldest first; the integer value is the class index models use."""

    PRE_NECTARIAN = 0
    NECTARIAN = 1
    IMBRIAN = 2
    ERATOSTHENIAN = 3
    COPERNICAN = 4

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def code(self) -> str:
        return _CODES[self]

    @property
    def start_ga(self) -> float:
        """Older boundary of the class, Ga (pre-Nectarian reaches back to the Moon's formation)."""
        return _START_GA[self]

    @property
    def end_ga(self) -> float:
        """Younger boundary of the class, Ga."""
        return _END_GA[self]

    @classmethod
    def from_age_ga(cls, age_ga: float) -> "AgeClass":
        """Class of a crater of model age ``age_ga`` (billions of years)."""
        for c in cls:
            if age_ga > c.end_ga:
                return c
        return cls.COPERNICAN

    @classmethod
    def parse(cls, text: str | int) -> "AgeClass":
        """Accept an index, a code (``pNc``, ``Nc``, ``Ic``, ``Ec``, ``Cc`` and the system names
        used by USGS maps, e.g. ``Imbrian``, ``Copernican System``) or a label."""
        if isinstance(text, int) or (isinstance(text, str) and text.strip().isdigit()):
            return cls(int(text))
        key = str(text).strip().lower().replace("system", "").replace("-", " ").replace("_", " ").strip()
        for c in cls:
            if key in (c.code.lower(), c.label.lower().replace("-", " "), c.name.lower().replace("_", " ")):
                return c
        raise ValueError(f"unknown lunar age class {text!r}; expected one of {[c.code for c in cls]}")


_LABELS = {
    AgeClass.PRE_NECTARIAN: "pre-Nectarian",
    AgeClass.NECTARIAN: "Nectarian",
    AgeClass.IMBRIAN: "Imbrian",
    AgeClass.ERATOSTHENIAN: "Eratosthenian",
    AgeClass.COPERNICAN: "Copernican",
}
_CODES = {
    AgeClass.PRE_NECTARIAN: "pNc",
    AgeClass.NECTARIAN: "Nc",
    AgeClass.IMBRIAN: "Ic",
    AgeClass.ERATOSTHENIAN: "Ec",
    AgeClass.COPERNICAN: "Cc",
}
# Wilhelms (1987) boundaries, Ga.
_START_GA = {
    AgeClass.PRE_NECTARIAN: 4.5,
    AgeClass.NECTARIAN: 3.92,
    AgeClass.IMBRIAN: 3.85,
    AgeClass.ERATOSTHENIAN: 3.2,
    AgeClass.COPERNICAN: 1.1,
}
_END_GA = {
    AgeClass.PRE_NECTARIAN: 3.92,
    AgeClass.NECTARIAN: 3.85,
    AgeClass.IMBRIAN: 3.2,
    AgeClass.ERATOSTHENIAN: 1.1,
    AgeClass.COPERNICAN: 0.0,
}

NUM_AGE_CLASSES: int = len(AgeClass)
AGE_CLASS_CODES: tuple[str, ...] = tuple(c.code for c in AgeClass)
#: Column names of the per-class probabilities in the ages contract and the database, oldest first.
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{c.code.lower()}" for c in AgeClass)
