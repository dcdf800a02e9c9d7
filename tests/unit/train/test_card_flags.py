"""The training scripts' model-card flags: --base_model_id, --dataset_name, --language, --license."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_training_flags_for_the_card_are_checked():
    from ragtune.train.embedder.arguments import build_parser

    parser = build_parser()
    args = parser.parse_args(["--base_model_id", "BAAI/bge-m3", "--dataset_name", "acme/qa", "--language", "vi", "en",
                              "--license", "mit"])
    assert (args.base_model_id, args.dataset_name, args.language, args.license) == (
        "BAAI/bge-m3", "acme/qa", ["vi", "en"], "mit")
    assert parser.parse_args([]).license is None and parser.parse_args([]).language == ["vi"]
    for bad in (["--base_model_id", str(Path("/tmp/x/bge"))], ["--language", "vi,en"], ["--license", "Apache 2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
