"""The answer generators a RAG pipeline (and so evaluate_rag.py and predict_rag.py) can use, and their prompt.

A generator is a local transformers causal LM (a folder or a .gguf file, plus an optional peft LoRA adapter) or
any OpenAI-compatible endpoint. Both answer greedily / at temperature 0 through one disk cache
(:class:`~ragtune.generation.llm_cache.LLMCache`), so a rerun, or a run that was interrupted, generates only
what is missing. :class:`GeneratorSettings` is what an evaluation records about its generator (never an API
key) and :func:`build_generator` turns it back into the same generator, so that the generator measured is the
one that runs.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ragtune.core.errors import UserError
from ragtune.core.model_specs import file_digest, folder_fingerprint, is_gguf
from ragtune.generation.llm_cache import CachedLLM, LLMCache
from ragtune.generation.llm_client import OpenAIChatClient, openai_key_for
from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, Messages, rag_messages, trained_system_prompt

logger = logging.getLogger(__name__)

# Tokens a reachability check may generate: enough for any server to answer, too few to cost anything.
CHECK_TOKENS = 8


def answer_messages(question: str, contexts: Sequence[str], system_prompt: str | None = None) -> Messages:
    """The generator's prompt: ragtune.generation.prompt's, the one fine_tune_generator.py trains on.

    ``system_prompt`` None means the default (Vietnamese) one; a local adapter brings the one it was
    trained with (:attr:`LocalGenerator.system_prompt`).
    """
    return rag_messages(question, contexts, DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt)


class EndpointGenerator:
    """Answers from an OpenAI-compatible endpoint, through the disk cache, ``workers`` requests at a time."""

    def __init__(self, llm: CachedLLM, workers: int = 4, progress: bool | None = None) -> None:
        self.llm = llm
        self.workers = max(1, workers)
        self.progress = progress
        self.model_id = llm.model_id
        self.system_prompt: str | None = None  # the default prompt: a server brings no trained one

    @property
    def requests(self) -> int:
        return self.llm.requests

    def check(self, question: str) -> None:
        """One short request (not cached) so that a server that is down fails before a run, not in the middle."""
        self.llm.client.complete(answer_messages(question, [], self.system_prompt), max_tokens=CHECK_TOKENS,
                                 temperature=0.0)

    def generate(self, prompts: Sequence[Messages]) -> list[str]:
        jobs = [lambda m=m: self.llm.ask(m, "generate") for m in prompts]
        return [(a or "").strip() for a in run_in_threads(jobs, self.workers, "generate", self.progress)]


def run_in_threads(jobs: Sequence[Callable[[], Any]], workers: int, desc: str, progress: bool | None = None) -> list:
    """Run the jobs on a thread pool, results in the jobs' order; the first error stops everything."""
    from tqdm.auto import tqdm

    if not jobs:
        return []
    results: list[Any] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), desc=desc, disable=None if progress is None else not progress, leave=False) as bar:
        futures = {pool.submit(job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


class LocalGenerator:
    """A local transformers causal LM (a folder or a .gguf file, plus an optional peft LoRA adapter).

    Loading and generation are ragtune.generation.inference's, as in fine_tune_generator.py's dev
    evaluation: the adapter's tokenizer and chat template, thinking off (Qwen3), greedy decoding
    that stops at the end-of-turn tokens, and the system prompt the adapter was trained with.
    """

    def __init__(self, path: str, adapter: str | None, cache: LLMCache, max_new_tokens: int = 256,
                 batch_size: int = 4, device: str | None = None) -> None:
        self.path = Path(path).expanduser()
        gguf = is_gguf(self.path)
        if gguf and not self.path.is_file():
            raise UserError(f"--generator_local: GGUF file not found: {path}")
        if not gguf and (not self.path.is_dir() or not (self.path / "config.json").exists()):
            raise UserError(f"--generator_local: {path} is not a model folder (no config.json) nor a .gguf file")
        self.adapter = Path(adapter).expanduser() if adapter else None
        if self.adapter is not None and not (self.adapter / "adapter_config.json").exists():
            raise UserError(f"--generator_adapter: {adapter} is not a peft adapter folder (no adapter_config.json)")
        if gguf:
            digest = hashlib.sha256()
            file_digest(self.path, digest)
            ident = f"local:gguf:{digest.hexdigest()[:16]}"
        else:
            ident = f"local:{folder_fingerprint(self.path)}"
        if self.adapter is not None:
            ident += f"+lora:{folder_fingerprint(self.adapter)}"
        self.model_id = ident
        self.system_prompt = trained_system_prompt(str(self.adapter) if self.adapter else None)
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.device = device
        self.requests = 0
        self._model = None
        self._tokenizer = None

    def check(self, question: str) -> None:
        """Load the model now: a base or adapter that cannot be loaded fails before a run, not in the middle."""
        self._load()

    def _load(self) -> None:
        if self._model is None:
            # Imported here, as in generate: ragtune.generation.inference imports torch and transformers (seconds),
            # which a run whose answers are all cached never needs.
            import torch

            from ragtune.generation.inference import load_generator

            device = self.device or ("cuda" if torch.cuda.is_available() else None)  # the GPU when there is one
            self._model, self._tokenizer = load_generator(str(self.path), str(self.adapter) if self.adapter else None,
                                                          device=device)

    def generate(self, prompts: Sequence[Messages]) -> list[str]:
        from tqdm.auto import tqdm

        from ragtune.generation.inference import generate_from_messages  # torch, transformers: see _load

        params = {"temperature": 0.0, "max_tokens": self.max_new_tokens}
        keys = [LLMCache.key(self.model_id, m, params) for m in prompts]
        answers: list[str | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            self._load()
            model, tokenizer = self._model, self._tokenizer
            limit = getattr(model.config, "max_position_embeddings", None) or 2048
            max_input = max(16, int(limit) - self.max_new_tokens)
            for start in tqdm(range(0, len(todo), self.batch_size), desc="generate (local)", leave=False):
                batch = todo[start:start + self.batch_size]
                texts = generate_from_messages(model, tokenizer, [prompts[i] for i in batch], self.max_new_tokens,
                                               self.batch_size, max_input_tokens=max_input)
                for i, text in zip(batch, texts):
                    answers[i] = text
                    self.cache.put(keys[i], text, {"model": self.model_id, "kind": "generate"})
                self.requests += len(batch)
        return [a or "" for a in answers]


@dataclass(frozen=True)
class GeneratorSettings:
    """Which generator answers, as an evaluation records it (systems.json) and a prediction rebuilds it.

    ``local`` (a model folder or a .gguf file) with an optional LoRA ``adapter``, or an endpoint's ``base_url``
    and ``model``. Never an API key: the key is given again where the generator runs.
    """

    local: str | None = None
    adapter: str | None = None
    base_url: str | None = None
    model: str | None = None
    max_new_tokens: int = 256

    @property
    def kind(self) -> str:
        return "local" if self.local else "endpoint"

    def record(self) -> dict[str, Any]:
        """JSON for systems.json: local paths made absolute, so a prediction run from elsewhere finds them."""
        if self.local:
            return {"kind": "local", "local": str(Path(self.local).expanduser().resolve()),
                    "adapter": str(Path(self.adapter).expanduser().resolve()) if self.adapter else None,
                    "max_new_tokens": self.max_new_tokens}
        return {"kind": "endpoint", "base_url": self.base_url, "model": self.model,
                "max_new_tokens": self.max_new_tokens}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> GeneratorSettings:
        return cls(local=record.get("local"), adapter=record.get("adapter"), base_url=record.get("base_url"),
                   model=record.get("model"), max_new_tokens=int(record.get("max_new_tokens") or 256))

    @classmethod
    def from_flags(cls, args: Any) -> GeneratorSettings | None:
        """The settings a script's ``--generator_*`` flags give; None when they name no generator."""
        if not (args.generator_local or args.generator_base_url):
            return None
        return cls(local=args.generator_local, adapter=args.generator_adapter, base_url=args.generator_base_url,
                   model=args.generator_model, max_new_tokens=args.generator_max_new_tokens)


@dataclass(frozen=True)
class EndpointOptions:
    """How an endpoint generator is called: key (never saved), workers, timeout, retries and backoff."""

    api_key: str | None = None
    workers: int = 4
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0

    @classmethod
    def from_flags(cls, args: Any, workers: int = 4) -> EndpointOptions:
        """From a script's ``--generator_api_key`` and ``--endpoint_*`` flags."""
        return cls(args.generator_api_key, workers, args.endpoint_timeout, args.endpoint_retries,
                   args.endpoint_backoff)


def build_generator(settings: GeneratorSettings, cache: LLMCache, device: str | None = None,
                    endpoint: EndpointOptions = EndpointOptions()) -> LocalGenerator | EndpointGenerator:
    """The generator ``settings`` describe, answering through ``cache``."""
    if settings.local:
        return LocalGenerator(settings.local, settings.adapter, cache, settings.max_new_tokens, device=device)
    client = OpenAIChatClient(settings.base_url or "", settings.model or "",
                              endpoint.api_key or openai_key_for(settings.base_url), flag="--generator_base_url",
                              timeout=endpoint.timeout, retries=endpoint.retries, backoff=endpoint.backoff)
    return EndpointGenerator(CachedLLM(client, cache, settings.max_new_tokens), workers=endpoint.workers)
