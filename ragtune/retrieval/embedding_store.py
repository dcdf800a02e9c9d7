"""Embeddings on disk: passage matrices written block by block, read back chunk by chunk, cached across runs.

Each model encodes the corpus once: the passage embeddings are cached under a key of everything
that shapes them (model hash, prompts, max length, corpus fingerprint), and so are the query
embeddings. A rerun with the same inputs loads no model at all.

Memory: passage embeddings are written to the cache block by block and read back chunk by chunk with
plain file reads, so with the chunked top-k (:mod:`ragtune.core.ranking`) resident memory stays bounded by
``query_batch x chunk_size`` scores plus the model, whatever the size of the corpus.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ragtune.core.data import Corpus
from ragtune.core.model_specs import ModelSpec, refresh_after_download

logger = logging.getLogger(__name__)

# Bump when what a cache file holds changes meaning (every cache key includes it).
CACHE_VERSION = 1


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
    def write(path: Path, n_rows: int, blocks: Iterable[np.ndarray]) -> EmbeddingStore:
        def write_blocks(tmp: Path) -> None:
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

        write_atomically(path, write_blocks)
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


def cache_key(payload: Any) -> str:
    """sha256 of a JSON-able description of what a cache file holds."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def cache_file(cache_dir: str | Path, folder: str, prefix: str, payload: Any, suffix: str) -> Path:
    """``<cache_dir>/<folder>/<prefix>-<key><suffix>``, the key a hash of ``payload``: all that shapes the file."""
    return Path(cache_dir) / folder / f"{prefix}-{cache_key(payload)[:24]}{suffix}"


def write_atomically(path: str | Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """``write(tmp)`` into a temporary file of this process, then rename it over ``path`` (folders created).

    An interrupted run leaves no half-written cache file, and two runs sharing a cache folder never
    write into the same temporary file. ``suffix`` ends the temporary name (``np.save`` wants ".npy").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp{suffix}")
    write(tmp)
    tmp.replace(path)


def load_model(loader: Callable[..., Any], spec: ModelSpec, device: str | None, max_seq_length: int | None,
               length_flag: str = "--max_seq_length", **kwargs: Any) -> Any:
    """``loader`` (SentenceTransformer, CrossEncoder) on the model ``spec`` names, on ``device``, its inputs cut
    at ``max_seq_length`` (at most the model's limit); a Hub model downloaded now gets its snapshot hashed."""
    # Imported here: ragtune.core.models imports torch, which a run that finds everything cached never needs.
    from ragtune.core.models import load_with_max_length

    if device:
        kwargs["device"] = device
    model = load_with_max_length(loader, spec.name, spec.flag, max_seq_length, length_flag, **kwargs)
    refresh_after_download(spec)
    return model


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
            from sentence_transformers import SentenceTransformer  # heavy (torch, transformers): only on a cache miss

            logger.info("Loading embedding model %s", self.run.spec.name)
            self._model = load_model(SentenceTransformer, self.run.spec, self.device, self.run.max_seq_length)
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
        gc.collect()


def passage_store(handle: EmbeddingModelHandle, corpus: Corpus, cache_dir: Path, block_size: int = 4096,
                  corpus_fingerprint: str | None = None, progress: bool | None = None) -> tuple[EmbeddingStore, bool]:
    """Passage embeddings from the cache, or encoded block by block into it. Returns (store, from_cache)."""
    from tqdm.auto import tqdm

    fingerprint = corpus_fingerprint or corpus.fingerprint()
    if handle.run.spec.path is None:  # a Hub model not downloaded yet: its hash is known once it is
        handle.model()
    path = cache_file(cache_dir, "embeddings", "passages", handle.run.key(fingerprint), ".npy")
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
    path.with_suffix(".json").write_text(json.dumps(
        {**handle.run.key(fingerprint), "model_name": handle.run.spec.name, "passages": len(corpus),
         "dim": store.dim}, indent=2, ensure_ascii=False))
    return store, False


def query_embeddings(handle: EmbeddingModelHandle, texts: Sequence[str],
                     cache_dir: Path | None) -> tuple[np.ndarray, bool]:
    """Query embeddings from the cache, or encoded in batches and cached."""
    payload = {**handle.run.key(""), "queries": cache_key(list(texts))}
    path = cache_file(cache_dir, "embeddings", "queries", payload, ".npy") if cache_dir else None
    if path is not None and path.exists():
        try:
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                return emb, True
        except (OSError, ValueError):
            pass
    emb = handle.encode_queries(texts)
    if path is not None:
        write_atomically(path, lambda tmp: np.save(tmp, emb), suffix=".npy")
    return emb, False
