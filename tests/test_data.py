"""The data layer: every format users bring, and the errors they can cause."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from ragtune.data import (SAMPLE_CORPUS, SAMPLE_TEST, SAMPLE_TRAIN, load_corpus, load_queries, parse_id_list,
                          split_queries)
from ragtune.errors import UserError


@pytest.fixture()
def corpus():
    return load_corpus(SAMPLE_CORPUS)


def write_csv(path, header, rows, bom=True):
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, index=False, encoding="utf-8-sig" if bom else "utf-8")
    return path


def test_sample_dataset_is_large_enough_and_consistent(corpus):
    train = load_queries(SAMPLE_TRAIN, corpus)
    test = load_queries(SAMPLE_TEST, corpus, flag="--test_data")
    assert len(corpus) >= 60
    assert len(train) + len(test) >= 120
    assert any(len(q.relevant_ids) > 1 for q in train)
    assert all(q.answer for q in train + test)
    assert not {q.query for q in train} & {q.query for q in test}


def test_neorag_csv_with_bom_reads_stt_and_text(tmp_path):
    path = write_csv(tmp_path / "c.csv", ["STT", "Văn bản"], [[1, "Câu lạc bộ   được thành lập"], [2, "Ban   chủ nhiệm"]])
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    corpus = load_corpus(path)
    assert corpus.ids == ["1", "2"]
    assert corpus.texts[0] == "Câu lạc bộ được thành lập"


def test_xlsx_queries_mix_ints_and_comma_strings(tmp_path, corpus):
    path = tmp_path / "train.xlsx"
    pd.DataFrame({"Query": ["a?", "b?", "c?"], "Ground truth document": [5, "15, 37", 7.0],
                  "Ground truth answer": ["x", "y", None], "Difficulty": [1, 2, 3]}).to_excel(path, index=False)
    queries = load_queries(path, corpus)
    assert [q.relevant_ids for q in queries] == [["5"], ["15", "37"], ["7"]]
    assert queries[2].answer == ""


@pytest.mark.parametrize("cell, expected", [
    (15, ["15"]), (15.0, ["15"]), ("15, 37", ["15", "37"]), ("[15, 37]", ["15", "37"]), ("15;37;15", ["15", "37"]),
    (" 4 ", ["4"]), ([1, "2"], ["1", "2"]),
])
def test_ground_truth_cells_parse(cell, expected):
    assert parse_id_list(cell) == expected


def test_id_text_csv_and_jsonl_corpus_and_lowercase_query_columns(tmp_path):
    write_csv(tmp_path / "c.csv", ["id", "text"], [["a", "alpha"], ["b", "beta"]], bom=False)
    with open(tmp_path / "c.jsonl", "w") as f:
        for pid, text in [("a", "alpha"), ("b", "beta")]:
            f.write(json.dumps({"id": pid, "text": text}) + "\n")
    for name in ("c.csv", "c.jsonl"):
        corpus = load_corpus(tmp_path / name)
        assert corpus.ids == ["a", "b"]
    write_csv(tmp_path / "q.csv", ["query", "relevant_ids", "answer"], [["what?", "a, b", "ans"]])
    (query,) = load_queries(tmp_path / "q.csv", corpus)
    assert query.relevant_ids == ["a", "b"] and query.answer == "ans"


def test_flag_embedding_jsonl_maps_texts_to_ids_and_adds_unknown_passages(tmp_path):
    corpus_path = write_csv(tmp_path / "c.csv", ["id", "text"], [["a", "alpha"], ["b", "beta"], ["c", "gamma"]])
    corpus = load_corpus(corpus_path)
    with open(tmp_path / "q.jsonl", "w") as f:
        f.write(json.dumps({"query": "q1", "pos": ["alpha", "delta"], "neg": ["gamma"]}) + "\n")
    (query,) = load_queries(tmp_path / "q.jsonl", corpus)
    assert query.relevant_ids[0] == "a" and len(corpus) == 4
    assert corpus.text(query.relevant_ids[1]) == "delta"
    assert query.given_negative_ids == ["c"]


def test_unknown_ids_are_dropped_with_a_warning_naming_rows(tmp_path, corpus, caplog):
    path = write_csv(tmp_path / "q.csv", ["Query", "Ground truth document"],
                     [["ok?", "1"], ["partly?", "2, 999"], ["gone?", "998"]])
    with caplog.at_level(logging.WARNING):
        queries = load_queries(path, corpus)
    assert [q.relevant_ids for q in queries] == [["1"], ["2"]]
    assert "2 passage id(s) not in the corpus" in caplog.text and "rows 3, 4" in caplog.text


@pytest.mark.parametrize("header, rows, message", [
    (["Query", "Ground truth document"], [["q?", "999"]], "no query in"),
    (["Query", "Ground truth document"], [["  ", "1"]], "row 2: blank query"),
    (["Query", "Ground truth document"], [["q?", ""]], "row 2: no ground-truth passage id"),
    (["Question", "Docs"], [["q?", "1"]], "needs columns ('Query', 'Ground truth document') or ('query', 'relevant_ids')"),
])
def test_bad_query_files_raise_one_clear_error(tmp_path, corpus, header, rows, message):
    path = write_csv(tmp_path / "q.csv", header, rows)
    with pytest.raises(UserError) as info:
        load_queries(path, corpus)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("header, rows, message", [
    (["STT", "Văn bản"], [], "holds no passages"),
    (["STT", "Văn bản"], [[1, "a"], [2, "b"], [1, "c"]], "row 4: duplicate passage id 1 (first seen at row 2)"),
    (["STT", "Text"], [[1, "a"]], "needs columns"),
])
def test_bad_corpus_files_raise_one_clear_error(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "c.csv", header, rows)
    with pytest.raises(UserError) as info:
        load_corpus(path)
    assert message in str(info.value)


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--corpus: file not found"):
        load_corpus(tmp_path / "nope.csv")


def test_split_is_seeded_query_level_and_groups_duplicate_queries(corpus):
    queries = load_queries(SAMPLE_TRAIN, corpus)
    queries.append(queries[0].__class__(query=queries[0].query, relevant_ids=["72"], row=999))
    train, dev = split_queries(queries, 0.2, seed=7)
    again_train, again_dev = split_queries(queries, 0.2, seed=7)
    assert [q.row for q in dev] == [q.row for q in again_dev]
    assert {q.query for q in train}.isdisjoint({q.query for q in dev})
    assert len(train) + len(dev) == len(queries)
    assert abs(len({q.query for q in dev}) - 20) <= 1
    other_train, other_dev = split_queries(queries, 0.2, seed=8)
    assert {q.row for q in other_dev} != {q.row for q in dev}


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_split_rejects_ratio_outside_unit_interval(corpus, ratio):
    queries = load_queries(SAMPLE_TRAIN, corpus)
    with pytest.raises(UserError, match="--dev_ratio"):
        split_queries(queries, ratio, seed=0)
