"""What defines a RAG system, written down so that it can be rebuilt exactly: :class:`SystemSpec` and systems.json.

evaluate_rag.py writes ``systems.json`` beside its reports: per system its first stage, models (path, hash,
prompts, lengths), fusion weights and depths, reranker top N, and the query expansion map; for the whole
evaluation the corpus, the generator's settings (never an API key) and which system is best by the main
metric. :meth:`ragtune.pipeline.RAGPipeline.from_evaluation` reads it back, so the system predict_rag.py runs
is the one that was measured.

Query expansion (:mod:`ragtune.core.expansions`) applies to the queries the first stage sees. Which map: an
explicit ``--expansions`` file wins over a map saved in a model folder (with a warning naming the model when
they differ: its training and dev numbers used its own); without one, the map saved with the first stage's
embedding model, else the one saved with the reranker (its first stage was mined and measured with it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.errors import UserError
from ragtune.core.expansions import QueryExpander, load_saved
from ragtune.core.fusion import FUSION_KEY, saved_weight
from ragtune.core.model_specs import ModelSpec, resolve_model, saved_metrics
from ragtune.retrieval.first_stage import FIRST_STAGES, HybridFusion

logger = logging.getLogger(__name__)

SYSTEMS_FILE = "systems.json"
SYSTEMS_VERSION = 1


@dataclass(frozen=True)
class ModelSettings:
    """One model of a system: as named, where it was found, its hash, and how it is run."""

    name: str
    path: str | None = None
    fingerprint: str = ""
    revision: str | None = None
    label: str = ""
    max_length: int | None = None  # max_seq_length of an embedding model, max_length of a reranker
    query_prompt: str | None = None  # embedding models: the prompts they ran with
    passage_prompt: str | None = None

    @classmethod
    def of(cls, spec: ModelSpec, max_length: int | None, query_prompt: str | None = None,
           passage_prompt: str | None = None) -> ModelSettings:
        return cls(spec.name, str(spec.path) if spec.path else None, spec.fingerprint, spec.revision,
                   spec.label or spec.name, max_length, query_prompt, passage_prompt)

    def record(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()}

    def resolve(self, flag: str) -> ModelSpec:
        """The model found again (its folder if it still exists, else its name); a warning when its files changed
        since it was recorded: what runs is then not what was measured."""
        where = self.path if self.path and Path(self.path).exists() else self.name
        spec = resolve_model(where, flag)
        spec.label = self.label or spec.label
        if self.fingerprint and spec.fingerprint and spec.fingerprint != self.fingerprint:
            logger.warning("%s %s changed since it was evaluated (hash %s, now %s): its results are not those "
                           "measured", flag, where, self.fingerprint, spec.fingerprint)
        return spec


@dataclass(frozen=True)
class SystemSpec:
    """One RAG system: a first stage (``bm25``, ``dense``, ``hybrid`` with ``fusion``), an optional reranker over
    the top ``rerank_top_n`` (fused with the first stage with ``reranker_weight``, or alone when None), and the
    query expansion map its first stage applies (``expansions``: (abbreviation, expansion) pairs)."""

    name: str
    first_stage: str
    embedding: ModelSettings | None = None
    fusion: HybridFusion | None = None
    reranker: ModelSettings | None = None
    rerank_top_n: int = 20
    reranker_weight: float | None = None
    expansions: tuple[tuple[str, str], ...] = ()
    expansions_source: str = ""
    notes: dict[str, Any] = field(default_factory=dict, compare=False)  # where weights came from, for reports

    def __post_init__(self) -> None:
        if self.first_stage not in FIRST_STAGES:
            raise ValueError(f"first stage {self.first_stage!r} is not one of {FIRST_STAGES}")
        if self.first_stage != "bm25" and self.embedding is None:
            raise ValueError(f"a {self.first_stage} first stage needs an embedding model")
        if self.first_stage == "hybrid" and self.fusion is None:
            raise ValueError("a hybrid first stage needs its fusion")

    @property
    def kind(self) -> str:
        """bm25 | dense | hybrid | rerank | hybrid_rerank | fused_rerank, as results.json names them."""
        if self.reranker is None:
            return self.first_stage
        if self.reranker_weight is not None:
            return "fused_rerank"
        return "hybrid_rerank" if self.first_stage == "hybrid" else "rerank"

    def expander(self) -> QueryExpander | None:
        return QueryExpander(self.expansions, source=self.expansions_source) if self.expansions else None

    def with_expansions(self, expander: QueryExpander | None) -> SystemSpec:
        """This system with another expansion map (None: none)."""
        if expander is None:
            return replace(self, expansions=(), expansions_source="")
        return replace(self, expansions=tuple((e.abbreviation, e.expansion) for e in expander.entries),
                       expansions_source=expander.source)

    def record(self) -> dict[str, Any]:
        """systems.json's entry for this system."""
        expander = self.expander()
        return {"name": self.name, "kind": self.kind, "first_stage": self.first_stage,
                "embedding_model": self.embedding.record() if self.embedding else None,
                "fusion": self.fusion.record() if self.fusion else None,
                "reranker_model": self.reranker.record() if self.reranker else None,
                "rerank_top_n": self.rerank_top_n if self.reranker else None,
                "reranker_weight": self.reranker_weight,
                "query_expansions": None if expander is None else {
                    **expander.summary(), "entries": [list(pair) for pair in self.expansions]},
                "notes": self.notes}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SystemSpec:
        fusion = record.get("fusion")
        expansions = record.get("query_expansions") or {}
        return cls(name=record["name"], first_stage=record["first_stage"],
                   embedding=ModelSettings(**record["embedding_model"]) if record.get("embedding_model") else None,
                   fusion=HybridFusion(fusion["fusion"], fusion.get("dense_weight"), int(fusion["depth"]))
                   if fusion else None,
                   reranker=ModelSettings(**record["reranker_model"]) if record.get("reranker_model") else None,
                   rerank_top_n=int(record.get("rerank_top_n") or 20), reranker_weight=record.get("reranker_weight"),
                   expansions=tuple(tuple(pair) for pair in expansions.get("entries", [])),
                   expansions_source=expansions.get("source", ""), notes=record.get("notes") or {})


# ---------------------------------------------------------------------------- saved choices


@dataclass(frozen=True)
class RerankerFusion:
    """A fused reranker's weight, the top N it was chosen at (and is applied at), and where it came from;
    ``against``: the first stage a saved weight was chosen against (fine_tune_reranker.py's --first_stage)."""

    weight: float
    depth: int
    source: str
    choice: dict[str, Any] | None = None
    against: str | None = None


def saved_reranker_fusion(spec: ModelSpec, top_n: int) -> RerankerFusion | None:
    """The reranker weight fine_tune_reranker.py chose on dev and saved, at the depth saved with it (its dev top N;
    ``top_n`` for a record saved before the depth was); None when the reranker's metrics.json has none."""
    weight = saved_weight(spec.path, "reranker_weight") if spec.path else None
    if weight is None:
        return None
    record = saved_metrics(spec.path)[FUSION_KEY]
    depth, against = record.get("depth"), record.get("first_stage")
    valid = isinstance(depth, int) and not isinstance(depth, bool) and depth > 0
    return RerankerFusion(weight, depth if valid else top_n, "metrics.json",
                          against=against if isinstance(against, str) else None)


def choose_expansions(explicit: QueryExpander | None, models: Sequence[ModelSpec | None],
                      flag: str = "--expansions") -> QueryExpander | None:
    """The query expansion map a system's first stage applies (see the module docstring); None for none.

    ``models``: the system's embedding model, then its reranker (None where it has none).
    """
    saved = [(spec, found) for spec in models if spec is not None and spec.path is not None
             for found in [load_saved(spec.path)] if found is not None]
    if explicit is not None:
        for spec, found in saved:
            if found.fingerprint() != explicit.fingerprint():
                logger.warning("%s saved a query expansion map (%d entries) that differs from %s (%d entries): %s "
                               "is applied; without it, the model's map would be", spec.label or spec.name,
                               len(found), flag, len(explicit), flag)
        return explicit
    if not saved:
        return None
    (first_spec, chosen), rest = saved[0], saved[1:]
    for spec, found in rest:
        if found.fingerprint() != chosen.fingerprint():
            logger.warning("%s and %s saved different query expansion maps: %s's is applied (the first stage's "
                           "model); give %s FILE to choose", first_spec.label, spec.label, first_spec.label, flag)
    return chosen


# ---------------------------------------------------------------------------- systems.json


def write_systems(folder: str | Path, systems: Sequence[SystemSpec], corpus: dict[str, Any],
                  main_metric: str, best: str | None, generator: dict[str, Any] | None,
                  settings: dict[str, Any]) -> Path:
    """``<folder>/systems.json``: what rebuilds each system (no secret is in any of it)."""
    path = Path(folder) / SYSTEMS_FILE
    payload = {"version": SYSTEMS_VERSION, "corpus": corpus, "main_metric": main_metric, "best": best,
               "generator": generator, "settings": settings, "systems": [s.record() for s in systems]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


@dataclass
class Evaluation:
    """An evaluate_rag.py output folder as systems.json describes it."""

    folder: Path
    systems: list[SystemSpec]
    corpus: dict[str, Any]
    main_metric: str
    best: str | None
    generator: dict[str, Any] | None
    settings: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.systems]

    def input_paths(self) -> dict[str, str]:
        """The local files and folders this evaluation's systems read (corpus, models, generator), by what they are:
        inputs an output must not overwrite."""
        found = {"the evaluated corpus (--from)": self.corpus.get("path")}
        for spec in self.systems:
            for role, model in (("embedding model", spec.embedding), ("reranker", spec.reranker)):
                if model is not None and model.path:
                    found[f"the evaluated {role} {model.label or model.name} (--from)"] = model.path
        for role in ("local", "adapter"):
            found[f"the evaluated generator's {role} files (--from)"] = (self.generator or {}).get(role)
        return {what: path for what, path in found.items() if path}

    def system(self, name: str = "best", flag: str = "--system") -> SystemSpec:
        """The system called ``name``; ``best``: the best by the evaluation's main metric."""
        wanted = self.best if name == "best" else name
        for spec in self.systems:
            if spec.name == wanted:
                return spec
        raise UserError(f"{flag} {name!r} is not a system of the evaluation in {self.folder}; its systems: "
                        f"best ({self.best}), {', '.join(self.names)}")


def read_evaluation(folder: str | Path, flag: str = "--from") -> Evaluation:
    """The evaluation in ``folder`` (its systems.json), or a UserError saying why there is none."""
    folder = Path(folder).expanduser()
    path = folder / SYSTEMS_FILE
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: no such folder (give an evaluate_rag.py --output_dir)")
    if not path.is_file():
        hint = (" (results.json without systems.json: it was written by an older evaluate_rag.py; run it again)"
                if (folder / "results.json").is_file() else "")
        raise UserError(f"{flag} {folder} holds no evaluation: no {SYSTEMS_FILE} (give an evaluate_rag.py "
                        f"--output_dir){hint}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        systems = [SystemSpec.from_record(record) for record in payload["systems"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{flag} {path} cannot be read ({type(err).__name__}: {err}); run evaluate_rag.py "
                        f"again") from err
    if payload.get("version") != SYSTEMS_VERSION or not systems:
        raise UserError(f"{flag} {path}: version {payload.get('version')} with {len(systems)} systems; this "
                        f"ragtune reads version {SYSTEMS_VERSION}: run evaluate_rag.py again")
    return Evaluation(folder, systems, payload.get("corpus") or {}, payload.get("main_metric", ""),
                      payload.get("best"), payload.get("generator"), payload.get("settings") or {})


def best_system(names: Sequence[str], values: Sequence[float | None]) -> str | None:
    """The name with the highest value (the first of equals); None when no value is known."""
    known = [(value, -i) for i, value in enumerate(values) if value is not None]
    return names[-max(known)[1]] if known else None
