"""Query expansion: abbreviations in a query get their expansion written after them, ``clb`` -> ``clb (câu lạc bộ)``.

The map is a CSV file (UTF-8, a byte-order mark is fine), two columns, an optional header::

    abbreviation,expansion
    # lines starting with "#" are comments (say where an entry comes from)
    clb,câu lạc bộ
    hđ,hoạt động

Matching rules, and why:

- **Whole words only**: ``clb`` matches in ``CLB có mấy ban?`` and ``(clb)``, never inside ``clbx`` or ``clb2``.
- **Case-insensitive**: ``clb``, ``CLB`` and ``Clb`` are one abbreviation.
- **Accent-aware**: both sides are NFC-normalised, so a query typed on macOS (NFD) matches; the accents themselves
  are significant. ``đ`` and ``d`` are different letters in Vietnamese, and folding them would mis-match real
  abbreviations (``hđ`` = hoạt động, ``hd`` = hướng dẫn); a map that wants the unaccented spelling too lists it
  as its own line.
- **Longest first**: where several abbreviations could match at one place (``clb ptit`` and ``clb``), the longest
  wins. Spaces inside an abbreviation match any run of whitespace.
- **Appended, not replaced**: the abbreviation stays in the query, so BM25 still matches passages that use it
  (the NeoRAG corpus writes ``CLB`` about 200 times) and a dense model still sees the words it was trained on,
  while the expansion matches passages that spell the words out. An abbreviation gets its expansion once per
  query, and not at all when the query already holds the expansion; the query is returned unchanged (not even
  NFC-normalised) when nothing matches.

One pass over the query: expansions are not expanded again, so chains and cycles in a map cannot loop.
File errors (a blank entry, an expansion that contains its own abbreviation, one abbreviation with two
different expansions) are :class:`~ragtune.core.errors.UserError` naming the file and line.

A map travels with a model: :meth:`QueryExpander.save` writes ``query_expansions.csv`` into the model folder
and :func:`load_saved` reads it back, so every later step applies the map the model was trained with.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ragtune.core.data import check_input_file, read_text
from ragtune.core.errors import UserError

EXPANSIONS_FILE = "query_expansions.csv"
HEADER = ("abbreviation", "expansion")
COMMENT = "#"

# A word character, or a combining mark that NFC could not fold into its letter: either continues a word.
_WORD = r"\w\u0300-\u036f"


@dataclass(frozen=True)
class Expansion:
    abbreviation: str  # NFC, whitespace collapsed, as written
    expansion: str
    where: str = field(default="", compare=False)  # "line 3" of the file, for messages


def normalize(text: str) -> str:
    """NFC with whitespace collapsed: how entries are stored and queries are matched."""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def _key(text: str) -> str:
    return normalize(text).lower()


def _phrase_pattern(text: str) -> str:
    """A regex for ``text`` as whole words, any whitespace between them (used with IGNORECASE)."""
    body = r"\s+".join(re.escape(part) for part in normalize(text).split())
    return rf"(?<![{_WORD}])(?:{body})(?![{_WORD}])"


def _check(entries: Sequence[Expansion], source: str) -> list[Expansion]:
    """The entries, normalised and validated; an identical repeat is dropped, a conflicting one is an error."""
    prefix = f"{source} " if source else ""
    kept: dict[str, Expansion] = {}
    for raw in entries:
        entry = Expansion(normalize(raw.abbreviation), normalize(raw.expansion), raw.where)
        where = f"{prefix}{entry.where}: " if entry.where else prefix
        if not entry.abbreviation:
            raise UserError(f"{where}blank abbreviation")
        if not entry.expansion:
            raise UserError(f"{where}blank expansion for {entry.abbreviation!r}")
        if not re.search(r"\w", entry.abbreviation):
            raise UserError(f"{where}abbreviation {entry.abbreviation!r} holds no letter or digit")
        if re.search(_phrase_pattern(entry.abbreviation), entry.expansion, re.IGNORECASE):
            raise UserError(f"{where}expansion {entry.expansion!r} contains its own abbreviation "
                            f"{entry.abbreviation!r} (self-referencing)")
        first = kept.get(_key(entry.abbreviation))
        if first is None:
            kept[_key(entry.abbreviation)] = entry
        elif _key(first.expansion) != _key(entry.expansion):
            raise UserError(f"{where}abbreviation {entry.abbreviation!r} is expanded as {entry.expansion!r} here and "
                            f"as {first.expansion!r} at {first.where or 'an earlier entry'}; keep one")
    return list(kept.values())


class QueryExpander:
    """Expands abbreviations in queries (see the module docstring); ``expander(query)`` returns the new query.

    An expander without entries is valid and leaves every query unchanged (``bool(expander)`` is False).
    """

    def __init__(self, entries: Mapping[str, str] | Iterable[tuple[str, str] | Expansion] = (),
                 source: str = "") -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        given = [item if isinstance(item, Expansion) else Expansion(item[0], item[1], f"entry {number}")
                 for number, item in enumerate(items, start=1)]
        self.source = source
        self.entries: list[Expansion] = _check(given, source)
        self._by_key = {_key(e.abbreviation): e for e in self.entries}
        self._present = {_key(e.abbreviation): re.compile(_phrase_pattern(e.expansion), re.IGNORECASE)
                         for e in self.entries}
        longest_first = sorted(self.entries, key=lambda e: (-len(e.abbreviation), _key(e.abbreviation)))
        alternatives = "|".join(r"\s+".join(re.escape(part) for part in e.abbreviation.split())
                                for e in longest_first)
        self._pattern = (re.compile(rf"(?<![{_WORD}])(?:{alternatives})(?![{_WORD}])", re.IGNORECASE)
                         if self.entries else None)

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"QueryExpander({len(self)} entries{' from ' + self.source if self.source else ''})"

    def __call__(self, query: str) -> str:
        return self.expand(query)

    def expand(self, query: str) -> str:
        """``query`` with each matched abbreviation followed by `` (expansion)``, once per abbreviation."""
        if self._pattern is None:
            return query
        text = unicodedata.normalize("NFC", query)
        done: set[str] = set()

        def replace(match: re.Match) -> str:
            key = _key(match.group())
            entry = self._by_key.get(key)
            if entry is None or key in done or self._present[key].search(text):
                return match.group()
            done.add(key)
            return f"{match.group()} ({entry.expansion})"

        expanded = self._pattern.sub(replace, text)
        return expanded if done else query

    def expand_all(self, queries: Iterable[str]) -> list[str]:
        return [self.expand(query) for query in queries]

    def to_csv(self) -> str:
        """The map as a CSV with a header: what :meth:`save` writes and :func:`load_expansions` reads back."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows((e.abbreviation, e.expansion) for e in self.entries)
        return buffer.getvalue()

    def fingerprint(self) -> str:
        """Content hash, for caches and metrics: equal maps give equal fingerprints whatever file they came from."""
        return hashlib.sha256(self.to_csv().encode("utf-8")).hexdigest()[:16]

    def summary(self) -> dict[str, object]:
        """JSON-safe record for metrics.json and model cards: where the map came from, its size and hash."""
        return {"file": EXPANSIONS_FILE, "source": self.source, "entries": len(self), "fingerprint": self.fingerprint(),
                "mode": "append"}

    def save(self, model_dir: str | Path) -> Path | None:
        """Write ``query_expansions.csv`` into ``model_dir`` (atomically); return its path.

        The map as applied is written (normalised, no comments), not a copy of the source file, so a file edited
        after loading cannot change what the model folder says. An empty expander writes nothing and removes a
        stale file a previous run may have left there, so that no later step applies a map this model never saw.
        """
        path = Path(model_dir) / EXPANSIONS_FILE
        if not self.entries:
            path.unlink(missing_ok=True)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_csv(), encoding="utf-8")
        tmp.replace(path)
        return path


def parse_expansions(text: str, source: str = "") -> QueryExpander:
    """A map from CSV text (see the module docstring); errors name ``source`` and the line."""
    entries: list[Expansion] = []
    reader = csv.reader(io.StringIO(text))
    start = 1
    for row in reader:
        line = start
        start = reader.line_num + 1  # a quoted cell may span lines: the next row starts after this one
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].startswith(COMMENT):
            continue
        if not entries and tuple(cell.lower() for cell in cells) == HEADER:
            continue
        if len(cells) > 2:
            raise UserError(f"{source} line {line}: expected 2 columns (abbreviation, expansion), got {len(cells)}")
        entries.append(Expansion(cells[0], cells[1] if len(cells) > 1 else "", f"line {line}"))
    if not entries:
        raise UserError(f"{source or 'the expansions file'} holds no expansions (expected lines like 'clb,câu lạc bộ')")
    return QueryExpander(entries, source=source)


def load_expansions(path: str | Path, flag: str = "--expansions") -> QueryExpander:
    """Read and validate an expansions CSV; a missing or unreadable file is a UserError naming ``flag``."""
    path = check_input_file(path, flag)
    return parse_expansions(read_text(path, flag), source=f"{flag}: {path}" if flag else str(path))


def load_saved(model_dir: str | Path) -> QueryExpander | None:
    """The map saved in a model folder by :meth:`QueryExpander.save`, or None when the model was trained without."""
    path = Path(model_dir) / EXPANSIONS_FILE
    if not path.is_file():
        return None
    return load_expansions(path, flag="")
