"""The data layer: every format users bring, and the errors they can cause."""

from __future__ import annotations

import json
import logging
import unicodedata

import pandas as pd
import pytest

from ragtune.core.data import (
    SAMPLE_CORPUS,
    SAMPLE_TEST,
    SAMPLE_TRAIN,
    load_corpus,
    load_queries,
    parse_id_list,
    split_queries,
)
from ragtune.core.errors import UserError


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


# ---------------------------------------------------------------------------- JSONL: types, objects, line numbers


def write_jsonl(path, lines):
    """``lines``: Python values written as JSON, or raw strings written as they are."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
                            for line in lines), encoding="utf-8")
    return path


def small_corpus(tmp_path):
    return load_corpus(write_csv(tmp_path / "c.csv", ["id", "text"], [["a", "alpha"], ["b", "beta"], ["c", "gamma"]]))


def assert_one_line(err, *parts):
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_flag_embedding_pos_given_as_a_string_is_an_error_not_one_passage_per_character(tmp_path):
    corpus = small_corpus(tmp_path)
    path = write_jsonl(tmp_path / "q.jsonl", [{"query": "q1", "pos": ["alpha"]}, {"query": "q2", "pos": "some text"}])
    with pytest.raises(UserError) as err:
        load_queries(path, corpus)
    assert_one_line(err, "--train_data", str(path), "line 2", "field 'pos'", "list of passage texts", "a string")
    assert len(corpus) == 3  # nothing was added to the corpus


@pytest.mark.parametrize("record, field, expected", [
    ({"query": 5, "pos": ["alpha"]}, "query", "must be a string, got a number (5)"),
    ({"query": "q", "pos": ["alpha", 3]}, "pos", "item 2 must be a passage text"),
    ({"query": "q", "pos": ["alpha"], "neg": "gamma"}, "neg", "must be a list of passage texts, got a string"),
    ({"query": "q", "pos": ["alpha"], "answer": ["x"]}, "answer", "must be a string, got a list"),
    ({"query": "q", "relevant_ids": {"id": "a"}}, "relevant_ids", "must be a list of passage ids"),
    ({"query": "q", "relevant_ids": ["a", ["b"]]}, "relevant_ids", "item 2 must be a passage id"),
    ({"query": "q", "relevant_ids": True}, "relevant_ids", "got a boolean"),
    ({"query": ["q"], "relevant_ids": "a"}, "query", "must be a string, got a list"),
    ({"query": "q", "relevant_ids": "a", "answer": 42}, "answer", "must be a string, got a number"),
    ({"query": "q", "relevant_ids": "a", "difficulty": [1]}, "difficulty", "must be a string or a number"),
])
def test_wrong_type_in_a_query_jsonl_field_names_file_line_and_field(tmp_path, record, field, expected):
    corpus = small_corpus(tmp_path)
    good = {k: v for k, v in {"query": "ok", "pos": ["beta"], "relevant_ids": "b"}.items()
            if k in record or k == "query"}
    path = write_jsonl(tmp_path / "q.jsonl", [good, "", record])
    with pytest.raises(UserError) as err:
        load_queries(path, corpus)
    assert_one_line(err, str(path), "line 3:", f"field '{field}'", expected)


@pytest.mark.parametrize("record, field, expected", [
    ({"id": ["a"], "text": "alpha"}, "id", "must be a string or an integer, got a list"),
    ({"id": 1.5, "text": "alpha"}, "id", "got a number (1.5)"),
    ({"id": "a", "text": {"body": "alpha"}}, "text", "must be a string, got an object"),
    ({"id": "a", "text": 7}, "text", "must be a string, got a number"),
])
def test_wrong_type_in_a_corpus_jsonl_field_names_file_line_and_field(tmp_path, record, field, expected):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "z", "text": "zeta"}, record])
    with pytest.raises(UserError) as err:
        load_corpus(path)
    assert_one_line(err, "--corpus", str(path), "line 2:", f"field '{field}'", expected)


def test_jsonl_ids_may_be_integers_or_integral_floats(tmp_path):
    corpus = load_corpus(write_jsonl(tmp_path / "c.jsonl", [{"id": 15, "text": "x"}, {"id": 37.0, "text": "y"}]))
    assert corpus.ids == ["15", "37"]
    path = write_jsonl(tmp_path / "q.jsonl", [{"query": "q", "relevant_ids": [15, "37"], "difficulty": 2}])
    assert load_queries(path, corpus)[0].relevant_ids == ["15", "37"]


@pytest.mark.parametrize("value, shown", [([1, "abc"], 'a list ([1, "abc"])'), ('"text"', "a string"), (3, "a number")])
@pytest.mark.parametrize("kind", ["corpus", "queries"])
def test_jsonl_line_that_is_not_an_object_is_a_user_error(tmp_path, value, shown, kind):
    if kind == "corpus":
        path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "alpha"}, value])
        call, flag = (lambda: load_corpus(path)), "--corpus"
    else:
        corpus = small_corpus(tmp_path)
        path = write_jsonl(tmp_path / "q.jsonl", [{"query": "q", "pos": ["alpha"]}, value])
        call, flag = (lambda: load_queries(path, corpus)), "--train_data"
    with pytest.raises(UserError) as err:
        call()
    assert_one_line(err, flag, str(path), "line 2: expected a JSON object", shown)


def test_json_array_items_that_are_not_objects_are_named_by_item(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"id": "a", "text": "alpha"}, ["b", "beta"]]))
    with pytest.raises(UserError) as err:
        load_corpus(path)
    assert_one_line(err, "item 2: expected a JSON object")


def test_jsonl_errors_name_the_line_in_the_file_not_a_spreadsheet_row(tmp_path, caplog):
    corpus = small_corpus(tmp_path)
    # Line 1 fine, line 2 blank, line 3 has a blank query.
    path = write_jsonl(tmp_path / "q.jsonl", [{"query": "q", "relevant_ids": "a"}, "",
                                              {"query": " ", "relevant_ids": "b"}])
    with pytest.raises(UserError) as err:
        load_queries(path, corpus)
    assert_one_line(err, "line 3: blank query")
    assert "row" not in str(err.value)
    path = write_jsonl(tmp_path / "q2.jsonl", ["", {"query": "q", "relevant_ids": "a, zz"}])
    with caplog.at_level(logging.WARNING):
        load_queries(path, corpus)
    assert "at 1 line(s): lines 2;" in caplog.text
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "x"}, "", {"id": "a", "text": "y"}])
    with pytest.raises(UserError) as err:
        load_corpus(path)
    assert_one_line(err, "line 3: duplicate passage id a (first seen at line 1)")


def test_jsonl_text_with_a_unicode_line_separator_stays_one_record(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "one\u2028two"}, {"id": "b", "text": "three\x85"}])
    assert load_corpus(path).ids == ["a", "b"]


# ---------------------------------------------------------------------------- headers, ids


def test_headers_saved_in_nfd_or_with_extra_spaces_are_recognised(tmp_path):
    nfd = unicodedata.normalize("NFD", "Văn bản")
    assert nfd != "Văn bản"
    path = write_csv(tmp_path / "c.csv", ["STT", nfd], [[1, "một"], [2, "hai"]])
    assert load_corpus(path).ids == ["1", "2"]
    path = tmp_path / "c.xlsx"
    pd.DataFrame({" STT ": [1], unicodedata.normalize("NFD", "Văn  bản"): ["x"]}).to_excel(path, index=False)
    assert load_corpus(path).texts == ["x"]


def test_columns_equal_after_normalisation_are_reported(tmp_path):
    header = ["STT", "Văn bản", unicodedata.normalize("NFD", "Văn bản")]
    path = write_csv(tmp_path / "c.csv", header, [[1, "a", "b"]])
    with pytest.raises(UserError, match="several columns named 'Văn bản'"):
        load_corpus(path)


@pytest.mark.parametrize("cell, expected", [
    ("doc 1, doc 2", ["doc 1", "doc 2"]), ("doc 1;doc 2", ["doc 1", "doc 2"]), ("doc 1 | doc 2", ["doc 1", "doc 2"]),
    ('["doc 1", "doc 2"]', ["doc 1", "doc 2"]), ("15\n37", ["15", "37"]), ("doc  1", ["doc 1"]),
    ("f(x)", ["f(x)"]), (unicodedata.normalize("NFD", "tài liệu 1"), ["tài liệu 1"]),
])
def test_ground_truth_ids_with_spaces_stay_whole(cell, expected):
    assert parse_id_list(cell) == expected


def test_ids_with_spaces_match_the_corpus(tmp_path, caplog):
    corpus = load_corpus(write_csv(tmp_path / "c.csv", ["id", "text"], [["doc 1", "x"], ["doc 2", "y"], ["3", "z"],
                                                                         ["4", "w"]]))
    path = write_csv(tmp_path / "q.csv", ["query", "relevant_ids"], [["q?", "doc 1, doc 2"], ["r?", "3 4"]])
    with caplog.at_level(logging.WARNING):
        queries = load_queries(path, corpus)
    assert [q.relevant_ids for q in queries] == [["doc 1", "doc 2"]]
    assert "'3 4' looks like several ids: separate ids with commas" in caplog.text


# ---------------------------------------------------------------------------- encodings, paths

VIETNAMESE = [["1", "Câu lạc bộ Lập trình"], ["2", "Ban chủ nhiệm"]]


def test_cp1252_corpus_says_it_is_not_utf8_and_how_to_fix_it(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("id,text\n1,café\n".encode("cp1252"))
    with pytest.raises(UserError) as err:
        load_corpus(path)
    assert_one_line(err, f"--corpus: {path} is not UTF-8 (byte 0xe9 at position 13, line 2)",
                    "save it as UTF-8 (Excel: Save As > CSV UTF-8)")


def test_latin1_query_file_and_jsonl_name_their_flag(tmp_path):
    corpus = small_corpus(tmp_path)
    path = tmp_path / "q.csv"
    path.write_bytes("query,relevant_ids\nniño?,a\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"--train_data: .*q\.csv is not UTF-8 \(byte 0xf1"):
        load_queries(path, corpus)
    path = tmp_path / "q.jsonl"
    path.write_bytes('{"query": "niño", "pos": ["alpha"]}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"--test_data: .*q\.jsonl is not UTF-8 .*; save it as UTF-8$"):
        load_queries(path, corpus, flag="--test_data")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_utf16_and_utf8_files_with_a_byte_order_mark_are_read(tmp_path, encoding):
    path = tmp_path / "c.csv"
    text = "STT,Văn bản\n" + "".join(f"{i},{t}\n" for i, t in VIETNAMESE)
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    corpus = load_corpus(path)
    assert corpus.texts == [t for _, t in VIETNAMESE]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                              for i, t in VIETNAMESE).encode("utf-16"))
    assert load_corpus(jsonl).texts == corpus.texts


def test_utf16_without_a_byte_order_mark_is_named(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("id,text\n1,a\n".encode("utf-16-le"))
    with pytest.raises(UserError, match="NUL bytes: UTF-16 without a byte-order mark"):
        load_corpus(path)


def test_a_directory_is_named_as_a_directory(tmp_path):
    with pytest.raises(UserError) as err:
        load_corpus(tmp_path)
    assert_one_line(err, f"--corpus: {tmp_path} is a directory, not a file")
