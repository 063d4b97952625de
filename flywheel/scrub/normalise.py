"""The view detectors read: invisible and look-alike characters folded away, with a map back to the original.

``card 4111\\u200b1111...`` and ``jane\\u200b@example.com`` hide PII from every pattern. Detectors run on
a normalised view instead (zero-width and bidi marks and soft hyphens dropped, unusual spaces made plain,
full-width forms made ASCII); spans found there are mapped back to offsets in the original text, so a
redaction also covers the hidden characters inside it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# Characters a reader cannot see: dropped from the view, shown as marks on the Review page.
INVISIBLE = {
    "\u00ad": "SHY",
    "\u061c": "ALM",
    "\u180e": "MVS",
    "\u200b": "ZWSP",
    "\u200c": "ZWNJ",
    "\u200d": "ZWJ",
    "\u200e": "LRM",
    "\u200f": "RLM",
    "\u202a": "LRE",
    "\u202b": "RLE",
    "\u202c": "PDF",
    "\u202d": "LRO",
    "\u202e": "RLO",
    "\u2060": "WJ",
    "\u2061": "FA",
    "\u2062": "IT",
    "\u2063": "IS",
    "\u2064": "IP",
    "\u2066": "LRI",
    "\u2067": "RLI",
    "\u2068": "FSI",
    "\u2069": "PDI",
    "\ufeff": "BOM",
}
# Spaces that look like a space but are not one: a plain space in the view, marked on the Review page.
ODD_SPACES = {
    "\u00a0": "NBSP",
    "\u2007": "FIGSP",
    "\u202f": "NNBSP",
    "\u3000": "IDSP",
    **{chr(c): "SP" for c in range(0x2000, 0x200B) if chr(c) != "\u2007"},
}
MARKED = {**INVISIBLE, **ODD_SPACES}
_SPECIAL = re.compile("[" + "".join(re.escape(c) for c in MARKED) + "\uff01-\uff5e]")


def needs_view(text: str) -> bool:
    """Whether the text holds a character the view folds away."""
    return _SPECIAL.search(text) is not None


def normalise(text: str) -> tuple[str, list[int] | None]:
    """The detection view of ``text`` and, when it differs, the original offset of each view character
    (plus one past the end); ``None`` means the view is the text itself."""
    if not needs_view(text):
        return text, None
    chars, origin = [], []
    for i, char in enumerate(text):
        if char in INVISIBLE:
            continue
        if char in ODD_SPACES:
            char = " "
        elif "\uff01" <= char <= "\uff5e":
            char = chr(ord(char) - 0xFEE0)
        chars.append(char)
        origin.append(i)
    origin.append(len(text))
    return "".join(chars), origin


def to_original(origin: Sequence[int] | None, start: int, end: int) -> tuple[int, int]:
    """A view span [start, end) as offsets into the original text."""
    if origin is None:
        return start, end
    return origin[start], origin[end - 1] + 1 if end > start else origin[start]


def marked_name(char: str) -> str:
    """A short visible name and the Unicode name of an invisible or odd-space character."""
    return f"{MARKED[char]} U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED')}"
