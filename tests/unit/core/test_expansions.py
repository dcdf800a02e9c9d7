"""Query expansion (ragtune.core.expansions): the CSV map, its validation, the matching rules, save and load."""

from __future__ import annotations

import codecs
import unicodedata
from pathlib import Path

import pytest

from ragtune.core.errors import UserError
from ragtune.core.expansions import EXPANSIONS_FILE, QueryExpander, load_expansions, load_saved, parse_expansions

REPO = Path(__file__).resolve().parents[3]
MAP = {"clb": "câu lạc bộ", "ctv": "cộng tác viên", "hđ": "hoạt động", "clb ptit": "câu lạc bộ lập trình ptit"}


def write(tmp_path: Path, text: str, name: str = "expansions.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture
def expand() -> QueryExpander:
    return QueryExpander(MAP)


# ---------------------------------------------------------------------------- loading


def test_header_is_optional_and_comments_blank_lines_and_a_bom_are_ignored(tmp_path):
    with_header = write(tmp_path, "# where it comes from\nabbreviation,expansion\n\nclb,câu lạc bộ\nctv,cộng tác viên\n",
                        "a.csv", bom=True)
    without = write(tmp_path, "clb,câu lạc bộ\n  # indented comment\nctv , cộng tác viên \n", "b.csv")
    a, b = load_expansions(with_header), load_expansions(without)
    assert [(e.abbreviation, e.expansion) for e in a.entries] == [("clb", "câu lạc bộ"), ("ctv", "cộng tác viên")]
    assert a.entries == b.entries and a.fingerprint() == b.fingerprint()


def test_entries_are_nfc_and_quoted_cells_may_hold_commas(tmp_path):
    nfd = unicodedata.normalize("NFD", "hđ,\"hoạt động, sự kiện\"\n")
    expander = load_expansions(write(tmp_path, nfd))
    assert expander.entries[0].abbreviation == "hđ" and expander.entries[0].expansion == "hoạt động, sự kiện"
    assert expander("các anh chị đang hđ") == "các anh chị đang hđ (hoạt động, sự kiện)"


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--expansions: file not found"):
        load_expansions(tmp_path / "nope.csv")


@pytest.mark.parametrize("text, message", [
    ("clb,câu lạc bộ\n,cộng tác viên\n", "line 2: blank abbreviation"),
    ("clb,câu lạc bộ\nctv,\n", "line 2: blank expansion for 'ctv'"),
    ("abbreviation,expansion\nctv\n", "line 2: blank expansion for 'ctv'"),
    ("clb,clb lập trình\n", "line 1: expansion 'clb lập trình' contains its own abbreviation 'clb' (self-referencing)"),
    ("# c\nCTV,cộng tác viên Ctv\n", "line 2: expansion 'cộng tác viên Ctv' contains its own abbreviation 'CTV'"),
    ("clb,câu lạc bộ\nctv,cộng tác viên\nCLB,cộng lực bộ\n",
     "line 3: abbreviation 'CLB' is expanded as 'cộng lực bộ' here and as 'câu lạc bộ' at line 1; keep one"),
    ("clb,câu lạc bộ,extra\n", "line 1: expected 2 columns (abbreviation, expansion), got 3"),
    ("--,gạch\n", "line 1: abbreviation '--' holds no letter or digit"),
    ("abbreviation,expansion\n# nothing else\n", "holds no expansions"),
    ("", "holds no expansions"),
])
def test_each_bad_file_is_one_user_error_naming_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_expansions(path)
    assert str(caught.value).startswith(f"--expansions: {path}") and message in str(caught.value)


def test_a_quoted_cell_over_two_lines_counts_where_its_row_starts(tmp_path):
    path = write(tmp_path, 'clb,"câu lạc\nbộ"\nctv,\n')
    with pytest.raises(UserError, match="line 3: blank expansion"):
        load_expansions(path)


def test_self_reference_is_whole_word_only():
    assert QueryExpander({"tv": "thành viên tvx"}).entries  # "tvx" is another word
    with pytest.raises(UserError, match="self-referencing"):
        QueryExpander({"tv": "thành viên (tv)"})


def test_a_repeated_identical_entry_is_kept_once():
    expander = parse_expansions("clb,câu lạc bộ\nCLB,Câu lạc  bộ\n", source="m.csv")
    assert len(expander) == 1 and expander("clb") == "clb (câu lạc bộ)"


def test_entries_from_code_are_checked_too():
    with pytest.raises(UserError, match="entry 2: blank expansion"):
        QueryExpander([("clb", "câu lạc bộ"), ("ctv", "  ")])


def test_the_neorag_map_in_benchmarks_is_valid():
    expander = load_expansions(REPO / "benchmarks" / "neorag_expansions.csv")
    assert len(expander) >= 5
    assert expander("CLB có mấy ban?") == "CLB (câu lạc bộ) có mấy ban?"


# ---------------------------------------------------------------------------- matching


@pytest.mark.parametrize("query, expected", [
    ("clb có mấy ban?", "clb (câu lạc bộ) có mấy ban?"),
    ("CLB có mấy ban?", "CLB (câu lạc bộ) có mấy ban?"),
    ("Clb có mấy ban?", "Clb (câu lạc bộ) có mấy ban?"),
    ("làm ctv thế nào", "làm ctv (cộng tác viên) thế nào"),
    ("(ctv), ctv.", "(ctv (cộng tác viên)), ctv."),  # once per query
    ("HĐ của clb", "HĐ (hoạt động) của clb (câu lạc bộ)"),
])
def test_whole_words_any_case(expand, query, expected):
    assert expand(query) == expected


@pytest.mark.parametrize("query", ["clbx", "xclb", "clb2", "clb_ptit", "ctvs", "hđx", "clb\u0301"])
def test_never_inside_another_word(expand, query):
    assert expand(query) == query


def test_accents_are_significant_but_their_encoding_is_not(expand):
    assert expand("hd là gì") == "hd là gì"  # d is not đ: "hd" is hướng dẫn, "hđ" hoạt động
    assert expand("đang hđ") == "đang hđ (hoạt động)"
    nfd = unicodedata.normalize("NFD", "đang hđ")
    assert expand(nfd) == "đang hđ (hoạt động)"  # NFC on both sides
    dá = QueryExpander({"dá": "dấu á"})
    assert dá("da") == "da" and dá("đá") == "đá" and dá("DÁ nhé") == "DÁ (dấu á) nhé"
    assert dá(unicodedata.normalize("NFD", "DÁ nhé")) == "DÁ (dấu á) nhé"
    assert QueryExpander({unicodedata.normalize("NFD", "dá"): "dấu á"})("dá") == "dá (dấu á)"


def test_longest_abbreviation_wins(expand):
    assert expand("clb ptit ở đâu") == "clb ptit (câu lạc bộ lập trình ptit) ở đâu"
    assert expand("CLB   PTIT ở đâu") == "CLB   PTIT (câu lạc bộ lập trình ptit) ở đâu"
    assert expand("clb và ptit") == "clb (câu lạc bộ) và ptit"
    # Order in the file does not matter.
    assert QueryExpander(dict(reversed(MAP.items())))("clb ptit") == expand("clb ptit")


def test_an_expansion_already_in_the_query_is_not_added(expand):
    query = "câu lạc bộ (CLB) có gì"
    assert expand(query) == query
    once = expand("CLB có ctv không")
    assert expand(once) == once


def test_a_query_without_match_is_returned_as_is(expand):
    nfd = unicodedata.normalize("NFD", "Câu lạc bộ có mấy ban?")
    assert expand(nfd) == nfd  # not even normalised
    empty = QueryExpander()
    assert not empty and empty("clb") == "clb"


def test_expansions_are_not_expanded_again():
    cyclic = QueryExpander({"a1": "b1 x", "b1": "a1 y"})
    assert cyclic("a1 b1") == "a1 (b1 x) b1 (a1 y)"
    assert cyclic.expand_all(["a1", "z"]) == ["a1 (b1 x)", "z"]


# ---------------------------------------------------------------------------- save / load


def test_save_and_load_saved_round_trip(tmp_path, expand):
    path = expand.save(tmp_path / "model")
    assert path == tmp_path / "model" / EXPANSIONS_FILE
    loaded = load_saved(tmp_path / "model")
    assert loaded is not None and loaded.entries == expand.entries and loaded.fingerprint() == expand.fingerprint()
    assert loaded.summary()["entries"] == 4 and loaded.summary()["fingerprint"] == expand.fingerprint()
    for query in ("CLB PTIT có ctv không", "hđ clb", "nothing"):
        assert loaded(query) == expand(query)


def test_the_saved_map_is_the_one_applied_not_a_copy_of_the_source(tmp_path):
    source = write(tmp_path, "# a comment\nCLB ,  câu  lạc bộ\n")
    path = load_expansions(source).save(tmp_path / "model")
    assert path.read_text(encoding="utf-8") == "abbreviation,expansion\nCLB,câu lạc bộ\n"


def test_load_saved_without_a_map_and_an_empty_save_removes_a_stale_one(tmp_path, expand):
    assert load_saved(tmp_path) is None
    expand.save(tmp_path)
    assert QueryExpander().save(tmp_path) is None
    assert not (tmp_path / EXPANSIONS_FILE).exists() and load_saved(tmp_path) is None


def test_a_broken_saved_map_names_its_file(tmp_path):
    (tmp_path / EXPANSIONS_FILE).write_text("abbreviation,expansion\nclb,\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"{EXPANSIONS_FILE} line 2: blank expansion"):
        load_saved(tmp_path)
