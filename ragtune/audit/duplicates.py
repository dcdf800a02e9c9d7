"""Duplicate passages and queries with conflicting labels.

Why: when a labelled passage has a twin in the corpus, the twin is scored as a "negative" - in training
(hard-negative mining picks it first) and in evaluation (retrieving it counts as a miss). And one query
text labelled with two different passage sets teaches the model two answers.

Passages are compared on their words, folded like queries (case, accents and punctuation dropped):
  exact    the same words (a hash group);
  near     Jaccard >= 0.8 of word 3-gram sets, found with MinHash + LSH (30 hashes, 10 bands of 3 rows:
           pairs at J 0.8 become candidates with probability 0.999, at J 0.6 with 0.91, at J 0.5 with 0.74)
           and then verified exactly, so the reported pairs have no false positives from the sketch.
  overlap  a candidate pair below that Jaccard where >= 80% of the shorter passage's 3-grams are in the
           longer one (one passage copied into another, e.g. NeoRAG passages 61 and 65). Best effort: LSH
           only proposes pairs with a Jaccard around 0.5 or more, so a short passage inside a much longer
           one can go unreported.
Thresholds measured on the NeoRAG corpus (99 passages): the most similar distinct pair has Jaccard 0.64
(passage 27 restates the second half of passage 9: containment 0.89); the next are 0.58 (61/65,
containment 0.93) and 0.53 (62/66); everything else is below 0.51.
MinHash is written here on numpy rather than taken from datasketch (not installed): a vectorised sketch of
all passages at once is what keeps a 100k-passage corpus in seconds.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ragtune.audit.text import tokens
from ragtune.core.data import Corpus, LabelledQuery

NEAR_DUPLICATE_THRESHOLD = 0.8
CONTAINMENT_THRESHOLD = 0.8
MIN_CONTAINED_SHINGLES = 10  # shorter passages share stock phrases without being copies
SHINGLE = 3
NUM_HASHES = 30
BANDS = 10
# Buckets larger than this are verified against their first member only (boilerplate copied 1000 times
# would otherwise cost a million comparisons).
MAX_BUCKET_PAIRS = 64


@dataclass(frozen=True)
class DuplicateGroup:
    ids: tuple[str, ...]
    kind: str  # "exact" (same words), "near" (Jaccard >= threshold) or "overlap" (one inside another)
    similarity: float  # lowest verified Jaccard that joined the group (1.0 for exact groups)

    @property
    def exact(self) -> bool:
        return self.kind == "exact"


@dataclass(frozen=True)
class ConflictingLabel:
    query: str
    # (set name, row, sorted relevant ids) for every occurrence
    occurrences: tuple[tuple[str, int, tuple[str, ...]], ...]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _shingles(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All word 3-gram hashes (uint64) of all documents, and each document's first shingle's offset.

    ``codes`` holds every document's word hashes back to back. Each document gets two sentinel ids appended,
    so a document shorter than 3 words still has one shingle and none crosses into the next document.
    """
    n = len(lengths)
    pad = SHINGLE - 1
    padded = np.full(int(lengths.sum()) + pad * n, np.iinfo(np.uint64).max, dtype=np.uint64)
    doc_start = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]]).astype(np.int64)
    padded[np.repeat(doc_start, lengths) + _ranges(lengths)] = codes
    counts = np.maximum(lengths - pad, 1)
    starts = np.repeat(doc_start, counts) + _ranges(counts)
    flat = padded
    with np.errstate(over="ignore"):
        values = (flat[starts] * np.uint64(0x9E3779B97F4A7C15)
                  ^ flat[starts + 1] * np.uint64(0xC2B2AE3D27D4EB4F)
                  ^ flat[starts + 2] * np.uint64(0x165667B19E3779F9))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return values, offsets


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(c)`` for every c in counts, without a Python loop."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


# Polynomial string hashing over UTF-8 bytes, modulo 2**64 (numpy's uint64 arithmetic wraps).
_P = 0x100000001B3  # odd, hence invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_CHUNK_TEXTS = 8192


def _powers(base: int, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out)  # wraps modulo 2**64


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every folded word of every text (back to back) and the word count of each text.

    Folding as in :func:`ragtune.audit.text.fold` (case, accents, punctuation). Done on the UTF-8 bytes of a
    chunk of texts with numpy instead of one Python string per word: on 100k passages (11M words) that is
    the difference between about a second and ten.
    """
    all_hashes, all_lengths = [], []
    for lo in range(0, len(texts), _CHUNK_TEXTS):
        chunk = texts[lo:lo + _CHUNK_TEXTS]
        joined = unicodedata.normalize("NFD", "\x00".join(chunk).casefold()).replace("đ", "d")
        raw = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
        # Combining marks U+0300..U+036F are the bytes CC 80..CD AF in UTF-8: drop them (accents).
        lead = (raw[:-1] == 0xCC) | ((raw[:-1] == 0xCD) & (raw[1:] <= 0xAF))
        drop = np.zeros(len(raw), dtype=bool)
        drop[:-1] |= lead
        drop[1:] |= lead
        b = raw[~drop]
        word = (b >= 0x80) | ((b >= 0x30) & (b <= 0x39)) | ((b >= 0x61) & (b <= 0x7A)) | (b == 0x5F)
        # Non-letters outside ASCII: general punctuation U+2000..U+206F (E2 80/81 xx: quotes, dashes, "…")
        # and the no-break space C2 A0.
        if len(b) >= 3:
            punct = (b[:-2] == 0xE2) & ((b[1:-1] == 0x80) | (b[1:-1] == 0x81))
            for shift in range(3):
                word[shift:len(b) - 2 + shift] &= ~punct
            nbsp = (b[:-1] == 0xC2) & (b[1:] == 0xA0)
            word[:-1] &= ~nbsp
            word[1:] &= ~nbsp
        before = np.concatenate([[False], word[:-1]])
        after = np.concatenate([word[1:], [False]])
        starts = np.flatnonzero(word & ~before)
        ends = np.flatnonzero(word & ~after) + 1
        with np.errstate(over="ignore"):
            prefix = np.cumsum((b.astype(np.uint64) + np.uint64(1)) * _powers(_P, len(b)), dtype=np.uint64)
            prefix = np.concatenate([np.zeros(1, dtype=np.uint64), prefix])
            hashes = (prefix[ends] - prefix[starts]) * _powers(_P_INV, len(b) + 1)[starts]
            hashes ^= hashes >> np.uint64(29)  # mix the high bits down: MinHash keeps the top 32
        separators = np.flatnonzero(b == 0)
        doc = np.searchsorted(separators, starts)
        all_hashes.append(hashes)
        all_lengths.append(np.bincount(doc, minlength=len(chunk)).astype(np.int64))
    return np.concatenate(all_hashes), np.concatenate(all_lengths)


def _sequence_keys(hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One 64-bit key per document for its whole word sequence (equal keys: the same words in order)."""
    local = _ranges(lengths)
    with np.errstate(over="ignore"):
        weighted = hashes * _powers(0x9E3779B97F4A7C15, int(lengths.max(initial=0)) + 1)[local]
    keys = np.zeros(len(lengths), dtype=np.uint64)
    nonempty = lengths > 0
    offsets = (np.cumsum(lengths) - lengths)[nonempty]
    if len(offsets):
        keys[nonempty] = np.add.reduceat(weighted, offsets)
    return keys


def _minhash(values: np.ndarray, offsets: np.ndarray, seed: int = 0) -> np.ndarray:
    """(documents x NUM_HASHES) MinHash signatures with multiply-shift hashing (the top 32 bits of a*x+b)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=NUM_HASHES, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=NUM_HASHES, dtype=np.uint64)
    signatures = np.empty((len(offsets), NUM_HASHES), dtype=np.uint64)
    buffer = np.empty_like(values)
    with np.errstate(over="ignore"):
        for k in range(NUM_HASHES):  # in place: no temporary arrays of the size of all shingles
            np.multiply(values, a[k], out=buffer)
            np.add(buffer, b[k], out=buffer)
            np.right_shift(buffer, np.uint64(32), out=buffer)
            signatures[:, k] = np.minimum.reduceat(buffer, offsets)
    return signatures


def _jaccard_containment(a: set, b: set) -> tuple[float, float]:
    shared = len(a & b)
    union = len(a) + len(b) - shared
    smaller = min(len(a), len(b))
    return (shared / union if union else 1.0), (shared / smaller if smaller >= MIN_CONTAINED_SHINGLES else 0.0)


def find_duplicate_passages(corpus: Corpus, threshold: float = NEAR_DUPLICATE_THRESHOLD) -> list[DuplicateGroup]:
    """Groups of passages that are the same text (exact) or nearly so (3-gram Jaccard >= threshold)."""
    n = len(corpus)
    if n < 2:
        return []
    hashes, lengths = _word_hashes(corpus.texts)
    keys = _sequence_keys(hashes, lengths)
    uf = _UnionFind(n)
    reps = _join_exact_copies(uf, keys, lengths)
    lowest: dict[int, float] = {}  # lowest verified Jaccard of an edge touching each member
    overlapping: set[int] = set()  # members joined by an "overlap" edge
    if len(reps) > 1:
        lowest, overlapping = _join_near_copies(uf, reps, hashes, lengths, threshold)
    result = []
    for members in _components(uf, n):
        if len(members) < 2:
            continue
        similarity = min((lowest.get(i, 1.0) for i in members), default=1.0)
        if len({(int(keys[i]), int(lengths[i])) for i in members}) == 1:
            kind = "exact"
        else:
            kind = "overlap" if overlapping.intersection(members) else "near"
        result.append(DuplicateGroup(ids=tuple(corpus.ids[i] for i in members), kind=kind,
                                     similarity=round(similarity, 4)))
    result.sort(key=lambda g: (-len(g.ids), corpus.index_of[g.ids[0]]))
    return result


def _join_exact_copies(uf: _UnionFind, keys: np.ndarray, lengths: np.ndarray) -> list[int]:
    """Join passages with the same word sequence; return one representative of each distinct sequence.

    The key is 64 bits: a collision among 100k passages has odds near 1e-10. Only the representatives go
    through MinHash.
    """
    first_of: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(keys.tolist(), lengths.tolist())):
        if key in first_of:
            uf.union(first_of[key], i)
        else:
            first_of[key] = i
    return list(first_of.values())


def _join_near_copies(uf: _UnionFind, reps: list[int], hashes: np.ndarray, lengths: np.ndarray,
                      threshold: float) -> tuple[dict[int, float], set[int]]:
    """Join the representatives whose 3-gram sets are near-duplicates or one inside the other, verified exactly
    on every LSH candidate pair. Returns each joined passage's lowest Jaccard and the passages joined by overlap."""
    is_rep = np.zeros(len(lengths), dtype=bool)
    is_rep[reps] = True
    values, offsets = _shingles(hashes[np.repeat(is_rep, lengths)], lengths[reps])
    ends = np.append(offsets[1:], len(values))
    shingle_sets: dict[int, set] = {}

    def shingle_set(r: int) -> set:
        if r not in shingle_sets:
            shingle_sets[r] = set(values[offsets[r]:ends[r]].tolist())
        return shingle_sets[r]

    lowest: dict[int, float] = {}
    overlapping: set[int] = set()
    for x, y in _candidate_pairs(_minhash(values, offsets)):
        score, contained = _jaccard_containment(shingle_set(x), shingle_set(y))
        if score >= threshold or contained >= CONTAINMENT_THRESHOLD:
            i, j = reps[x], reps[y]
            if score < threshold:
                overlapping.update((i, j))
            uf.union(i, j)
            lowest[i] = min(lowest.get(i, 1.0), score)
            lowest[j] = min(lowest.get(j, 1.0), score)
    return lowest, overlapping


def _candidate_pairs(signatures: np.ndarray) -> Iterator[tuple[int, int]]:
    """Pairs of rows (x < y) that share a band of their MinHash signatures, each pair once."""
    checked: set[tuple[int, int]] = set()
    for members in _band_buckets(signatures):
        if len(members) * (len(members) - 1) // 2 <= MAX_BUCKET_PAIRS:
            pairs = [(x, y) for k, x in enumerate(members) for y in members[k + 1:]]
        else:
            pairs = [(members[0], y) for y in members[1:]]
        for pair in pairs:
            if pair not in checked:
                checked.add(pair)
                yield pair


def _band_buckets(signatures: np.ndarray) -> Iterator[list[int]]:
    """Band by band, the sorted rows of every bucket of 2+ rows with the same band of signature."""
    rows = NUM_HASHES // BANDS
    for band in range(BANDS):
        block = signatures[:, band * rows:(band + 1) * rows]
        with np.errstate(over="ignore"):
            band_keys = block[:, 0]
            for r in range(1, rows):  # mix the rows into one 64-bit key; a collision is only a wasted check
                band_keys = band_keys * np.uint64(0x100000001B3) ^ block[:, r]
        order = np.argsort(band_keys, kind="stable")
        sorted_keys = band_keys[order]
        same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if not len(same):
            continue
        # Runs of equal keys: only buckets with 2+ members are visited.
        run_starts = same[np.concatenate([[True], np.diff(same) > 1])]
        for run_start in run_starts.tolist():
            run_end = run_start + 1
            while run_end < len(sorted_keys) and sorted_keys[run_end] == sorted_keys[run_start]:
                run_end += 1
            yield sorted(order[run_start:run_end].tolist())


def _components(uf: _UnionFind, n: int) -> list[list[int]]:
    """The members of each union-find set, in order of their smallest member."""
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return list(groups.values())


def labelled_twins(groups: Sequence[DuplicateGroup], queries: Sequence[LabelledQuery]) -> int:
    """Queries whose labelled passage has a duplicate that is NOT labelled (it will count as a negative)."""
    group_of = {pid: group for group in groups for pid in group.ids}
    affected = 0
    for query in queries:
        relevant = set(query.relevant_ids)
        if any(set(group_of[pid].ids) - relevant for pid in relevant if pid in group_of):
            affected += 1
    return affected


def find_conflicting_labels(named_sets: dict[str, Sequence[LabelledQuery]]) -> list[ConflictingLabel]:
    """The same question (case, accents and punctuation aside; word order kept) labelled differently."""
    by_key: dict[str, list[tuple[str, LabelledQuery]]] = {}
    for name, queries in named_sets.items():
        for query in queries:
            by_key.setdefault(" ".join(tokens(query.query)), []).append((name, query))
    conflicts = []
    for occurrences in by_key.values():
        labels = {tuple(sorted(q.relevant_ids)) for _, q in occurrences}
        if len(labels) > 1:
            conflicts.append(ConflictingLabel(
                query=occurrences[0][1].query,
                occurrences=tuple((name, q.row, tuple(sorted(q.relevant_ids))) for name, q in occurrences)))
    return conflicts
