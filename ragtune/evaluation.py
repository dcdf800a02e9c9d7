"""Retrieval evaluation: systems, the on-disk encode cache, chunked top-k, reranking, metrics, selection.

Every system (BM25, each embedding model, each embedding model + reranker) produces one ranked
list per query, ``depth`` passages deep; every metric at every k is then read off that list
(:mod:`ragtune.metrics`). Nothing is retrieved twice.

Ties. First-stage rankings (BM25, dense) order tied scores the way trec_eval does (passage id
descending, see :func:`ragtune.metrics.rank_by_score`), so our numbers equal trec_eval's given the
same scores. A reranker's ties keep the first-stage order.

Memory. Passage embeddings are written to the cache block by block and read back chunk by chunk
with plain file reads, and top-k is merged chunk by chunk: the resident memory is bounded by
``query_batch x chunk_size`` scores plus the model, whatever the size of the corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .data import QUERY_COLUMNS, Corpus, LabelledQuery, _check_file, _pick_columns, _read_table, parse_id_list
from .errors import UserError
from .metrics import RANKING_METRICS, mean_metrics, metric_key, query_metrics

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
CONTEXT_METRICS = ("context_precision", "context_recall")
# Files of a model folder that say nothing about its weights or tokenizer (training by-products).
_IGNORED_MODEL_FILES = {"metrics.json", "training_curves.png", "README.md", "training_args.bin", "trainer_state.json",
                        "optimizer.pt", "scheduler.pt", "rng_state.pth", ".gitattributes"}


# ---------------------------------------------------------------------------- test queries


def missing_test_ids(path: str | Path, corpus: Corpus, flag: str = "--test_data") -> dict[str, list[int]]:
    """Ground-truth ids of a CSV/XLSX/JSONL query table that are not in the corpus: {id: [rows]}.

    ``load_queries`` drops such ids with a warning (right for training data); an evaluation that
    silently dropped them would change recall's denominator, so the caller turns them into an error.
    """
    path = _check_file(path, flag)
    rows = _read_table(path, flag)
    if not rows or ("pos" in rows[0] and "query" in rows[0]):
        return {}  # empty (reported by load_queries) or FlagEmbedding texts (added to the corpus)
    _, ids_col, *_ = _pick_columns(rows, QUERY_COLUMNS, 2, path, flag)
    missing: dict[str, list[int]] = {}
    for offset, record in enumerate(rows):
        for pid in parse_id_list(record.get(ids_col)):
            if pid not in corpus.index_of:
                missing.setdefault(pid, []).append(offset + 2)
    return missing


# ---------------------------------------------------------------------------- models


@dataclass
class ModelSpec:
    """A model named on the command line, resolved to a folder where possible, with a content hash."""

    name: str
    flag: str
    label: str = ""
    path: Path | None = None
    revision: str | None = None
    fingerprint: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path) if self.path else None, "revision": self.revision,
                "hash": self.fingerprint}


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and not name.startswith((".", "/", "~")) and all(parts) and "\\" not in name


def _hub_snapshot(name: str) -> tuple[Path | None, str | None]:
    """The cached snapshot folder and commit of a Hub model, without any request."""
    if not _looks_like_hub_id(name):
        return None, None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None, None
    for filename in ("modules.json", "config.json"):
        try:
            found = try_to_load_from_cache(name, filename)
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            return None, None
        if isinstance(found, str):
            folder = Path(found).parent
            return folder, folder.name
    return None, None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model(name: str, flag: str) -> ModelSpec:
    """Find the model's folder (local path or Hub cache); unknown paths are a user error, checked before any work."""
    path = Path(name).expanduser()
    spec = ModelSpec(name=name, flag=flag)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag}: {path} is a file; expected a model folder")
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise UserError(f"{flag}: {path} is not a model folder (no config.json or modules.json)")
        spec.path = path.resolve()
    else:
        spec.path, spec.revision = _hub_snapshot(name)
        if spec.path is None:
            if not _looks_like_hub_id(name):
                raise UserError(f"{flag}: no model folder {name}")
            if hub_offline():
                raise UserError(
                    f"{flag}: '{name}' is neither a local model folder nor a Hub model in the local cache, and "
                    f"HF_HUB_OFFLINE is set. Download it where there is internet (`hf download {name} --local-dir "
                    f"DIR`) and pass DIR, or pass any local model folder.")
    if spec.path is not None:
        spec.fingerprint = folder_fingerprint(spec.path)
    return spec


def refresh_after_download(spec: ModelSpec) -> None:
    """A Hub model fetched at load time: now it has a snapshot folder to hash."""
    if spec.path is None:
        spec.path, spec.revision = _hub_snapshot(spec.name)
        if spec.path is not None:
            spec.fingerprint = folder_fingerprint(spec.path)
        else:
            spec.fingerprint = hashlib.sha256(spec.name.encode()).hexdigest()[:16]


def _file_digest(path: Path, digest: "hashlib._Hash") -> None:
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        if size <= 2 << 20:
            digest.update(handle.read())
        else:  # weights: size plus head and tail identify them without reading gigabytes
            digest.update(handle.read(1 << 20))
            handle.seek(size - (1 << 20))
            digest.update(handle.read(1 << 20))


def folder_fingerprint(folder: Path) -> str:
    """Hash of the files that define a model (weights, configs, tokenizer, sentence-transformers modules).

    Checkpoint folders, logs and training by-products are left out, so evaluating a model while its
    training folder gains checkpoints or a README does not invalidate the cache.
    """
    digest = hashlib.sha256()
    files: list[Path] = []
    for child in sorted(Path(folder).iterdir()):
        if child.is_file() and child.name not in _IGNORED_MODEL_FILES and not child.name.endswith((".png", ".tmp")):
            files.append(child)
        elif child.is_dir() and child.name[:1].isdigit() and "_" in child.name:  # 1_Pooling, 2_Normalize
            files += sorted(p for p in child.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\x00")
        _file_digest(path, digest)
    return digest.hexdigest()[:16]


def saved_prompts(folder: Path | None) -> tuple[str, str]:
    """The query and passage prompts a sentence-transformers folder saved, as encode_query/encode_document pick them."""
    if folder is None:
        return "", ""
    config_path = Path(folder) / "config_sentence_transformers.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "", ""
    prompts = config.get("prompts") or {}
    default = prompts.get(config.get("default_prompt_name") or "", "")
    query = prompts["query"] if "query" in prompts else default
    passage = next((prompts[n] for n in ("document", "passage", "corpus") if n in prompts), default)
    return query or "", passage or ""


_GENERIC_FOLDER_NAMES = {"model", "models", "final", "best", "best_model", "output", "outputs", "snapshot"}


def short_label(name: str) -> str:
    """'BAAI/bge-m3' -> 'bge-m3'; 'outputs/bge-m3-finetuned/' -> 'bge-m3-finetuned'.

    Generic folder names keep their parent: '.../run1/final' -> 'run1/final'.
    """
    path = Path(name.rstrip("/\\"))
    label = path.name or name
    if (label.lower() in _GENERIC_FOLDER_NAMES or label.startswith("checkpoint-")) and path.parent.name:
        label = f"{path.parent.name}/{label}"
    return label


def assign_labels(specs: Sequence[ModelSpec]) -> None:
    """Unique, readable system names: the folder name, with its parent when two collide."""
    labels = [short_label(s.name) for s in specs]
    for i, spec in enumerate(specs):
        label = labels[i]
        if labels.count(label) > 1:
            parent = Path(spec.name.rstrip("/\\")).parent.name
            label = f"{parent}/{label}" if parent else label
        spec.label = label
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.label in seen:
            seen[spec.label] += 1
            spec.label = f"{spec.label}#{seen[spec.label]}"
        else:
            seen[spec.label] = 1


# ---------------------------------------------------------------------------- chunked top-k


def tie_ranks(ids: Sequence[str]) -> np.ndarray:
    """Position of each passage in trec_eval's tie order (id descending, plain string comparison)."""
    ranks = np.empty(len(ids), dtype=np.int64)
    if not len(ids):
        return ranks
    # numpy compares unicode strings by code point, as Python (and strcmp on UTF-8) does; ids are unique.
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")[::-1]
    ranks[order] = np.arange(len(ids), dtype=np.int64)
    return ranks


class TopK:
    """Exact top-k per query under (score descending, tie rank ascending), merged block by block.

    ``update`` takes the scores of a batch of queries against a contiguous block of passages.
    Inside a block, ``argpartition`` finds the k best; when the k-th score is tied with passages
    outside those k, the tied passages are compared by tie rank, so the result never depends on
    how the corpus was cut into blocks.
    """

    def __init__(self, n_queries: int, k: int, tie_rank: np.ndarray) -> None:
        self.k = k
        self.tie_rank = tie_rank
        self.idx = [np.zeros((0,), dtype=np.int64) for _ in range(n_queries)]
        self.scores = [np.zeros((0,), dtype=np.float64) for _ in range(n_queries)]
        self._batched: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def update(self, q_start: int, doc_start: int, scores: np.ndarray) -> None:
        scores = np.asarray(scores)
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        if np.isnan(scores).any():
            scores = np.nan_to_num(scores, nan=-np.inf)
        n_rows, n_docs = scores.shape
        if n_rows == 0 or n_docs == 0:
            return
        kk = min(self.k, n_docs)
        ranks = self.tie_rank[doc_start:doc_start + n_docs]
        if kk < n_docs:
            part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
            ties = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > kk)
            for row in ties:  # rare: equal scores straddle the cut
                cand = np.flatnonzero(scores[row] >= kth[row])
                part[row] = cand[np.lexsort((ranks[cand], -scores[row, cand]))[:kk]]
        else:
            part = np.broadcast_to(np.arange(n_docs), (n_rows, n_docs))
        cand_scores = np.take_along_axis(scores, part, axis=1)
        cand_idx = part + doc_start
        key = q_start
        if key in self._batched and self._batched[key][0].shape[0] == n_rows:
            best_idx, best_scores = self._batched[key]
            cand_idx = np.concatenate([best_idx, cand_idx], axis=1)
            cand_scores = np.concatenate([best_scores, cand_scores], axis=1)
        order = np.lexsort((self.tie_rank[cand_idx], -cand_scores), axis=1)[:, :self.k]
        self._batched[key] = (np.take_along_axis(cand_idx, order, axis=1),
                              np.take_along_axis(cand_scores, order, axis=1))

    def result(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query, passage indices and scores, best first."""
        for q_start, (idx, scores) in self._batched.items():
            for offset in range(idx.shape[0]):
                self.idx[q_start + offset] = idx[offset]
                self.scores[q_start + offset] = scores[offset]
        return self.idx, self.scores


# ---------------------------------------------------------------------------- embedding store


class EmbeddingStore:
    """A float32 ``.npy`` matrix on disk, written block by block and read back chunk by chunk.

    Reads go through ``np.fromfile`` rather than a memory map, so pages of the file are never
    counted in the process's resident memory.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
            raise ValueError(f"{path} is not a C-ordered float32 matrix")
        self.n, self.dim = shape

    @staticmethod
    def write(path: Path, n_rows: int, blocks: Iterable[np.ndarray]) -> "EmbeddingStore":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        written = 0
        with open(tmp, "wb") as handle:
            for block in blocks:
                block = np.ascontiguousarray(block, dtype="<f4")
                if written == 0:
                    header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, block.shape[1])}
                    np.lib.format.write_array_header_1_0(handle, header)
                handle.write(block.tobytes())
                written += block.shape[0]
        if written != n_rows:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"expected {n_rows} embeddings, encoded {written}")
        tmp.replace(path)
        return EmbeddingStore(path)

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            for start in range(0, self.n, chunk_size):
                rows = min(chunk_size, self.n - start)
                block = np.fromfile(handle, dtype="<f4", count=rows * self.dim).reshape(rows, self.dim)
                yield start, block

    def load(self) -> np.ndarray:
        if not self.n:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([block for _, block in self.chunks(self.n)])


def dense_top_k(query_embeddings: np.ndarray, store: EmbeddingStore, k: int, tie_rank: np.ndarray,
                chunk_size: int = 16384, query_batch: int = 1024) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k passages per query by dot product (cosine for normalised embeddings), corpus read in chunks."""
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    top = TopK(len(queries), min(k, store.n), tie_rank)
    for start, chunk in store.chunks(chunk_size):
        for q0 in range(0, len(queries), query_batch):
            top.update(q0, start, queries[q0:q0 + query_batch] @ chunk.T)
    return top.result()


def bm25_top_k(index, queries: Sequence[str], k: int, tie_rank: np.ndarray, chunk_size: int = 16384,
               query_batch: int = 1024) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k by BM25 with the corpus cut into chunks of passages (scores never held queries x corpus)."""
    doc_terms = index.weights.T.tocsr()  # passages x terms
    top = TopK(len(queries), min(k, index.n_docs), tie_rank)
    query_matrices = [(q0, index._query_matrix(list(queries[q0:q0 + query_batch])))  # noqa: SLF001
                      for q0 in range(0, len(queries), query_batch)]
    for start in range(0, index.n_docs, chunk_size):
        chunk_t = doc_terms[start:start + chunk_size].T.tocsr()
        for q0, qm in query_matrices:
            top.update(q0, start, (qm @ chunk_t).toarray())
    return top.result()


# ---------------------------------------------------------------------------- encode cache


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


@dataclass
class EmbeddingRun:
    """How one embedding model is run: the prompts and settings that shape its vectors."""

    spec: ModelSpec
    query_prompt: str
    passage_prompt: str
    max_seq_length: int | None
    batch_size: int = 32

    def key(self, corpus_fingerprint: str) -> dict[str, Any]:
        return {"v": CACHE_VERSION, "model": self.spec.fingerprint or self.spec.name, "revision": self.spec.revision,
                "query_prompt": self.query_prompt, "passage_prompt": self.passage_prompt,
                "max_seq_length": self.max_seq_length, "corpus": corpus_fingerprint, "normalize": True}


class EmbeddingModelHandle:
    """Loads the SentenceTransformer only when something is not in the cache."""

    def __init__(self, run: EmbeddingRun, device: str | None) -> None:
        self.run = run
        self.device = device
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from .models import load_or_explain

            logger.info("Loading embedding model %s", self.run.spec.name)
            kwargs = {"device": self.device} if self.device else {}
            self._model = load_or_explain(SentenceTransformer, self.run.spec.name, self.run.spec.flag, **kwargs)
            if self.run.max_seq_length:
                self._model.max_seq_length = self.run.max_seq_length
            refresh_after_download(self.run.spec)
        return self._model

    def encode_queries(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        emb = self.model().encode_query(list(texts), prompt=self.run.query_prompt, batch_size=self.run.batch_size,
                                        convert_to_numpy=True, normalize_embeddings=True,
                                        show_progress_bar=show_progress)
        return np.asarray(emb, dtype=np.float32)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.model().encode_document(list(texts), prompt=self.run.passage_prompt, batch_size=self.run.batch_size,
                                           convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def release(self) -> None:
        self._model = None
        import gc

        gc.collect()


def passage_store(handle: EmbeddingModelHandle, corpus: Corpus, cache_dir: Path, block_size: int = 4096,
                  corpus_fingerprint: str | None = None, progress: bool | None = None) -> tuple[EmbeddingStore, bool]:
    """Passage embeddings from the cache, or encoded block by block into it. Returns (store, from_cache)."""
    from tqdm.auto import tqdm

    fingerprint = corpus_fingerprint or corpus.fingerprint()
    if handle.run.spec.path is None:  # a Hub model not downloaded yet: its hash is known once it is
        handle.model()
    key = _sha(handle.run.key(fingerprint))[:24]
    folder = Path(cache_dir) / "embeddings"
    path = folder / f"passages-{key}.npy"
    if path.exists():
        try:
            store = EmbeddingStore(path)
            if store.n == len(corpus):
                logger.info("Passage embeddings of %s: cache hit (%s)", handle.run.spec.label, path)
                return store, True
        except (OSError, ValueError) as err:
            logger.warning("Ignoring unreadable cache file %s (%s)", path, err)
    logger.info("Encoding %d passages with %s (query prompt %r, passage prompt %r)", len(corpus),
                handle.run.spec.label, handle.run.query_prompt, handle.run.passage_prompt)
    handle.model()
    bar = tqdm(total=len(corpus), desc=f"encode {handle.run.spec.label}", unit="passage",
               disable=None if progress is None else not progress, leave=False)

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, len(corpus), block_size):
            block = handle.encode_passages(corpus.texts[start:start + block_size])
            bar.update(len(block))
            yield block

    try:
        store = EmbeddingStore.write(path, len(corpus), blocks())
    finally:
        bar.close()
    folder.joinpath(f"passages-{key}.json").write_text(json.dumps(
        {**handle.run.key(fingerprint), "model_name": handle.run.spec.name, "passages": len(corpus),
         "dim": store.dim}, indent=2, ensure_ascii=False))
    return store, False


def query_embeddings(handle: EmbeddingModelHandle, texts: Sequence[str],
                     cache_dir: Path | None) -> tuple[np.ndarray, bool]:
    """Query embeddings from the cache, or encoded in batches and cached."""
    key = _sha({**handle.run.key(""), "queries": _sha(list(texts))})[:24]
    path = Path(cache_dir) / "embeddings" / f"queries-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                return emb, True
        except (OSError, ValueError):
            pass
    emb = handle.encode_queries(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    return emb, False


# ---------------------------------------------------------------------------- systems


@dataclass
class System:
    """One retrieval pipeline and its ranked lists (corpus indices, best first, ``depth`` deep)."""

    name: str
    kind: str  # "bm25" | "dense" | "rerank"
    embedding_model: str | None = None
    reranker_model: str | None = None
    ranked: list[list[int]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    per_query: list[dict[str, float | None]] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    answers: dict[int, list[str]] = field(default_factory=dict)

    def ranked_ids(self, corpus: Corpus, qi: int, depth: int | None = None) -> list[str]:
        row = self.ranked[qi] if depth is None else self.ranked[qi][:depth]
        return [corpus.ids[i] for i in row]


def bm25_system(corpus: Corpus, queries: Sequence[LabelledQuery], depth: int, tie_rank: np.ndarray,
                chunk_size: int) -> System:
    from .bm25 import BM25Index

    start = time.perf_counter()
    index = BM25Index(corpus.texts)
    idx, scores = bm25_top_k(index, [q.query for q in queries], depth, tie_rank, chunk_size)
    return System(name="bm25", kind="bm25", ranked=[r.tolist() for r in idx], scores=[s.tolist() for s in scores],
                  info={"seconds": round(time.perf_counter() - start, 3), "k1": 1.5, "b": 0.75})


def dense_system(handle: EmbeddingModelHandle, corpus: Corpus, queries: Sequence[LabelledQuery], depth: int,
                 tie_rank: np.ndarray, cache_dir: Path, chunk_size: int,
                 corpus_fingerprint: str | None = None) -> System:
    start = time.perf_counter()
    store, p_cached = passage_store(handle, corpus, cache_dir, corpus_fingerprint=corpus_fingerprint)
    q_emb, q_cached = query_embeddings(handle, [q.query for q in queries], cache_dir)
    idx, scores = dense_top_k(q_emb, store, depth, tie_rank, chunk_size=chunk_size)
    spec = handle.run.spec
    return System(name=spec.label, kind="dense", embedding_model=spec.name, ranked=[r.tolist() for r in idx],
                  scores=[s.tolist() for s in scores],
                  info={"embedding_model_hash": spec.fingerprint, "embedding_model_revision": spec.revision,
                        "query_prompt": handle.run.query_prompt, "passage_prompt": handle.run.passage_prompt,
                        "max_seq_length": handle.run.max_seq_length, "passage_embeddings_cached": p_cached,
                        "query_embeddings_cached": q_cached, "embedding_dim": store.dim,
                        "seconds": round(time.perf_counter() - start, 3)})


class RerankScores:
    """CrossEncoder scores of (query, passage) pairs, each pair scored once per run and cached on disk."""

    def __init__(self, spec: ModelSpec, max_length: int | None, cache_dir: Path | None) -> None:
        self.spec = spec
        self.max_length = max_length
        key = _sha({"v": CACHE_VERSION, "model": spec.fingerprint or spec.name, "max_length": max_length})[:24]
        self.path = Path(cache_dir) / "rerank" / f"scores-{key}.json" if cache_dir else None
        self.scores: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            try:
                self.scores = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.scores = {}
        self.computed = 0

    @staticmethod
    def pair_key(query: str, passage: str) -> str:
        return hashlib.sha1((query + "\x00" + passage).encode()).hexdigest()

    def score(self, pairs: Sequence[tuple[str, str]], device: str | None, batch_size: int,
              progress: bool | None = None) -> list[float]:
        keys = [self.pair_key(q, p) for q, p in pairs]
        todo = sorted({k: (q, p) for k, (q, p) in zip(keys, pairs) if k not in self.scores}.items())
        if todo:
            from sentence_transformers import CrossEncoder

            from .models import load_or_explain

            logger.info("Reranking %d (query, passage) pairs with %s", len(todo), self.spec.label)
            kwargs: dict[str, Any] = {"device": device} if device else {}
            if self.max_length:
                kwargs["max_length"] = self.max_length
            model = load_or_explain(CrossEncoder, self.spec.name, self.spec.flag, **kwargs)
            refresh_after_download(self.spec)
            values = model.predict([pair for _, pair in todo], batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=progress)
            for (key, _), value in zip(todo, np.asarray(values, dtype=np.float64).reshape(len(todo), -1)[:, 0]):
                self.scores[key] = float(value)
            self.computed += len(todo)
            del model
            self._save()
        else:
            logger.info("Reranker %s: every pair scored in the cache", self.spec.label)
        return [self.scores[k] for k in keys]

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.scores))
        tmp.replace(self.path)


def rerank_systems(first_stage: Sequence[System], reranker: RerankScores, corpus: Corpus,
                   queries: Sequence[LabelledQuery], top_n: int, device: str | None, batch_size: int) -> list[System]:
    """Each first-stage system's top ``top_n`` reordered by the reranker (ties keep first-stage order).

    Below ``top_n`` the first-stage order continues, so the list is as deep as before. Pairs shared
    by several first-stage systems are scored once.
    """
    start = time.perf_counter()
    pairs: list[tuple[str, str]] = []
    for system in first_stage:
        for qi, query in enumerate(queries):
            pairs += [(query.query, corpus.texts[pi]) for pi in system.ranked[qi][:top_n]]
    all_scores = reranker.score(pairs, device, batch_size)
    out, cursor = [], 0
    for system in first_stage:
        ranked, scores = [], []
        for qi in range(len(queries)):
            head = system.ranked[qi][:top_n]
            head_scores = all_scores[cursor:cursor + len(head)]
            cursor += len(head)
            order = sorted(range(len(head)), key=lambda j: (-head_scores[j], j))
            ranked.append([head[j] for j in order] + system.ranked[qi][top_n:])
            scores.append([head_scores[j] for j in order] + [float("-inf")] * len(system.ranked[qi][top_n:]))
        info = {k: v for k, v in system.info.items() if k.startswith("embedding_model") or k.endswith("prompt")}
        info.update({"reranker_model_hash": reranker.spec.fingerprint,
                     "reranker_model_revision": reranker.spec.revision,
                     "rerank_top_n": top_n, "seconds": round(time.perf_counter() - start, 3)})
        out.append(System(name=f"{system.name} + {reranker.spec.label}", kind="rerank",
                          embedding_model=system.embedding_model, reranker_model=reranker.spec.name,
                          ranked=ranked, scores=scores, info=info))
    return out


# ---------------------------------------------------------------------------- metrics


def rank_weighted_precision(verdicts: Sequence[int]) -> float:
    """RAGAS context precision: Σ_i precision@i · v_i / Σ_i v_i over the given ranks (0 if no v_i is 1)."""
    hits, total = 0, 0.0
    for i, v in enumerate(verdicts, start=1):
        if v:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def context_metrics(ranked_ids: Sequence[str], relevant_ids: Iterable[str], ks: Sequence[int]) -> dict[str, float]:
    """ID-based context precision@k (RAGAS's formula with the labels as verdicts) and context recall@k."""
    relevant = set(relevant_ids)
    verdicts = [1 if pid in relevant else 0 for pid in ranked_ids]
    out = {}
    for k in ks:
        out[metric_key("context_precision", k)] = rank_weighted_precision(verdicts[:k])
        out[metric_key("context_recall", k)] = sum(verdicts[:k]) / len(relevant) if relevant else 0.0
    return out


def score_system(system: System, corpus: Corpus, queries: Sequence[LabelledQuery], ks: Sequence[int]) -> None:
    """Every ranking and ID-based context metric at every k, from the system's one ranked list per query."""
    depth = max(ks)
    system.per_query = []
    for qi, query in enumerate(queries):
        ids = system.ranked_ids(corpus, qi, depth)
        values: dict[str, float | None] = dict(query_metrics(ids, query.relevant_ids, ks, RANKING_METRICS))
        values.update(context_metrics(ids, query.relevant_ids, ks))
        system.per_query.append(values)
    system.metrics = mean_metrics(system.per_query)  # type: ignore[arg-type]


def add_per_query_metrics(system: System, values: Sequence[dict[str, float | None]]) -> None:
    """Merge per-query values (None = not scored: excluded from the mean and counted)."""
    for row, extra in zip(system.per_query, values):
        row.update(extra)
    keys = sorted({key for extra in values for key in extra})
    for key in keys:
        scored = [v[key] for v in values if v.get(key) is not None]
        system.metrics[key] = float(np.mean(scored)) if scored else None
        missing = len(values) - len(scored)
        if missing:
            system.excluded[key] = missing
        else:
            system.excluded.pop(key, None)


# ---------------------------------------------------------------------------- publishing selection


@dataclass
class Selection:
    """The model to publish for one kind, with the system it is judged by and its baseline."""

    kind: str  # "embedding" | "reranker"
    model: str
    system: System
    baseline: System | None
    main_metric: str
    # False when the model is the only entry of its kind: the baseline (BM25, or the embedding model
    # without reranker) is then shown on the card but is not the model's base, so no regression check.
    is_base_comparison: bool = True

    @property
    def below_baseline(self) -> bool:
        if self.baseline is None:
            return False
        return _metric(self.system, self.main_metric) < _metric(self.baseline, self.main_metric)

    @property
    def regression(self) -> bool:
        """A fine-tuned model scoring below its base (the first entry) on the main metric."""
        return self.is_base_comparison and self.below_baseline


def _metric(system: System, key: str) -> float:
    value = system.metrics.get(key)
    return float("-inf") if value is None else float(value)


def _best(systems: Sequence[System], key: str) -> System:
    # max() keeps the first of equal values: with ties, the earlier command-line entry wins.
    return max(systems, key=lambda s: _metric(s, key))


def select_for_publishing(systems: Sequence[System], embedding_models: Sequence[str], reranker_models: Sequence[str],
                          main_metric: str) -> dict[str, Selection]:
    """Which embedding model and reranker to publish.

    Embedding: the first ``--embedding_models`` entry is the baseline; the candidate is the best
    later entry on ``main_metric``. Reranker: every reranker is judged on top of the best embedding
    system; the first ``--reranker_models`` entry is the baseline, the candidate the best later one.
    A single entry is the candidate itself; its card then compares it with BM25 (embedding) or with
    the embedding system alone (reranker), and no regression check applies (no base was evaluated).
    """
    out: dict[str, Selection] = {}
    dense = {s.embedding_model: s for s in systems if s.kind == "dense"}
    dense_list = [dense[m] for m in embedding_models if m in dense]
    if dense_list:
        single = len(dense_list) == 1
        if single:
            baseline = next((s for s in systems if s.kind == "bm25"), None)
            chosen = dense_list[0]
        else:
            baseline, chosen = dense_list[0], _best(dense_list[1:], main_metric)
        out["embedding"] = Selection("embedding", chosen.embedding_model or "", chosen, baseline, main_metric,
                                     not single)
        best_dense = _best(dense_list, main_metric)
        reranked = {s.reranker_model: s for s in systems
                    if s.kind == "rerank" and s.embedding_model == best_dense.embedding_model}
        rerank_list = [reranked[m] for m in reranker_models if m in reranked]
        if rerank_list:
            single = len(rerank_list) == 1
            if single:
                baseline, chosen = best_dense, rerank_list[0]
            else:
                baseline, chosen = rerank_list[0], _best(rerank_list[1:], main_metric)
            out["reranker"] = Selection("reranker", chosen.reranker_model or "", chosen, baseline, main_metric,
                                        not single)
    return out


def ranking_metric_keys(ks: Sequence[int]) -> list[str]:
    return [metric_key(name, k) for name in (*RANKING_METRICS, *CONTEXT_METRICS) for k in ks]
