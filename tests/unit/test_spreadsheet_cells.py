"""XLSX files the split and predict_rag.py write keep text as text: a cell that starts with "=" is not a formula."""

from __future__ import annotations

import openpyxl

from ragtune.pipeline import Passage
from ragtune.predict import Predictions, write_predictions
from ragtune.split import read_query_file

FORMULA_LOOKING = ["=1+1", '=HYPERLINK("http://example.com","bấm")', "=A1"]


def query_workbook(path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Câu hỏi"
    sheet.append(["Query", "Ground truth document"])
    for i, text in enumerate(FORMULA_LOOKING + ["Câu lạc bộ có mấy ban?"]):
        sheet.cell(row=i + 2, column=1, value=text).data_type = "s"  # text cells, as a user's sheet holds them
        sheet.cell(row=i + 2, column=2, value=str(i + 1))
    book.save(path)
    return path


def text_cells(path) -> list[tuple[str, str]]:
    """(value, openpyxl data type) of every string cell, formulas included ('f')."""
    sheet = openpyxl.load_workbook(path).active
    return [(cell.value, cell.data_type) for row in sheet.iter_rows() for cell in row if isinstance(cell.value, str)]


def test_split_writes_formula_looking_queries_as_text(tmp_path):
    query_file = read_query_file(query_workbook(tmp_path / "q.xlsx"))
    out = tmp_path / "all.xlsx"
    query_file.write([(range(len(query_file)), out)])
    cells = dict(text_cells(out))
    for text in FORMULA_LOOKING:
        assert cells.get(text) == "s", (text, cells)


def test_predictions_write_formula_looking_answers_as_text(tmp_path):
    query_file = read_query_file(query_workbook(tmp_path / "q.xlsx"), "--queries")
    passages = [[Passage(rank=1, id="1", text="=SUM(1,2)", score=0.5, stage_scores={})] for _ in query_file.queries]
    answers = ["=HYPERLINK(\"http://example.com\",\"x\")"] * len(query_file)
    out = write_predictions(tmp_path / "p.xlsx", query_file, Predictions(passages=passages, answers=answers))
    cells = dict(text_cells(out))
    for text in FORMULA_LOOKING + [answers[0]]:
        assert cells.get(text) == "s", (text, cells)
    assert '["=SUM(1,2)"]' in cells
