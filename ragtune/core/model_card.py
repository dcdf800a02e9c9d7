"""Model cards (README.md with Hugging Face metadata): the one writer for the embedding model, reranker and adapter.

Training writes a card next to each model (sentence-transformers writes its own for the embedding model and
the reranker, from its card data; ragtune writes the adapter's), and adds sections to it; publishing
(``ragtune.evaluate.hub``) writes the card that goes to the Hub. Both go through here, so the metadata
block and the section layout are the same everywhere. Every card is written through
:func:`ragtune.core.redaction.shown`: no secret, and no personal value unmasked under ``--pii warn`` (adding a
section rewrites the whole card, so sentence-transformers' own text, with its training examples, is masked too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragtune.core.redaction import shown


def card_text(data: Any, body: str) -> str:
    """A card's text: the ``huggingface_hub.ModelCardData`` as its YAML header, then the Markdown body."""
    return f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}"


def write_card(path: str | Path, data: Any, body: str) -> Path:
    """Write a card (``card_text``) to ``path`` (a README.md) and return the path."""
    path = Path(path)
    path.write_text(shown(card_text(data, body)), encoding="utf-8")
    return path


def add_card_section(card: str | Path, title: str, body: str, before: str | None = None) -> None:
    """Add a ``## title`` section to an existing card: before the section named ``before``, else at the end.

    A card that does not exist is left alone (a model saved without one).
    """
    card = Path(card)
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8")
    section = f"## {title}\n\n{body.strip()}\n"
    anchor = f"\n## {before}" if before else None
    if anchor and anchor in text:
        head, _, tail = text.partition(anchor)
        text = f"{head.rstrip()}\n\n{section}\n{anchor.lstrip()}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}"
    card.write_text(shown(text), encoding="utf-8")
