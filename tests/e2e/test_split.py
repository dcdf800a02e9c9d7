"""``python -m ragtune.split`` as a real process: reproducible by seed, near-copies on one side, the input's
format, rows and columns kept, and every bad input one line, exit 2, nothing written."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from conftest import REPO, assert_one_clear_error

HEADER = ["Query", "Ground truth document", "Ground truth answer", "Difficulty"]
# Planted near-copies of one question (case, accents, punctuation, order, one word changed), and a chain whose ends
# score below the threshold (0.67) but are joined through the middle.
PLANTED = [
    ["CLB Lập Trình PTIT được thành lập vào ngày tháng năm nào vậy?",
     "clb lập trình ptit được thành lập vào ngày tháng năm nào vậy",
     "CLB LAP TRINH PTIT DUOC THANH LAP VAO NGAY THANG NAM NAO VAY?",
     "Vào ngày tháng năm nào CLB Lập Trình PTIT được thành lập vậy?"],
    ["Quy trình tuyển thành viên mới của câu lạc bộ gồm mấy vòng và vòng nào khó nhất ạ?",
     "Quy trình tuyển cộng tác viên mới của câu lạc bộ gồm mấy vòng và vòng nào khó nhất ạ?"],
    ["một hai ba bốn năm sáu bảy tám chín mười", "một hai X bốn năm sáu bảy tám chín mười",
     "một hai X bốn năm Y bảy tám chín mười"],
]


def distinct_queries(n: int) -> list[str]:
    return [f"Câu {i}: " + " ".join(f"từ{i}x{k}" for k in range(8)) + "?" for i in range(n)]


def rows_for(queries: list[str]) -> list[list[str]]:
    return [[q, str(i % 7 + 1), f"Trả lời {i}", str(i % 3 + 1)] for i, q in enumerate(queries)]


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = True, delimiter: str = ",") -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerows([header, *rows])
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + buffer.getvalue().encode("utf-8"))
    return path


def read_csv(path: Path, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")), delimiter=delimiter))
    return rows[0], rows[1:]


def split(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ragtune.split", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def planted_csv(tmp_path) -> Path:
    queries = distinct_queries(31)
    for group in PLANTED:  # spread each group's members over the file
        for k, query in enumerate(group):
            queries.insert((7 * k + 3 * len(query)) % len(queries), query)
    return write_csv(tmp_path / "queries.csv", HEADER, rows_for(queries))


def test_near_copies_land_on_one_side_and_the_test_side_leaks_nothing(tmp_path, planted_csv):
    for seed in ("1", "2", "3", "42"):
        out = tmp_path / f"out{seed}"
        proc = split("--train_data", str(planted_csv), "--test_ratio", "0.25", "--seed", seed, "--output_dir",
                     str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["audit"]["leakage"]["leaked_test_queries"] == 0
        assert f"Next: python fine_tune_bge_m3.py --corpus YOUR_CORPUS.csv --train_data {out}" in proc.stderr
        assert summary["split"]["near_duplicate_groups"] == len(PLANTED)
        train = {row[0] for row in read_csv(out / "queries_train.csv")[1]}
        test = {row[0] for row in read_csv(out / "queries_test.csv")[1]}
        assert len(train) + len(test) == 40 and len(test) == 10
        for group in PLANTED:
            assert set(group) <= train or set(group) <= test, (seed, group)


def test_same_seed_same_files_other_seed_other_split(tmp_path, planted_csv):
    outputs = {}
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        proc = split("--train_data", str(planted_csv), "--seed", seed, "--output_dir", str(tmp_path / name),
                     cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = [digest(tmp_path / name / f"queries_{side}.csv") for side in ("train", "test")]
    assert outputs["a"] == outputs["b"]
    assert outputs["c"][1] != outputs["a"][1]


def _check_partition(original: list, train: list, test: list) -> None:
    """Every input row on exactly one side, unchanged, each side in the input's order."""
    assert sorted(map(repr, train + test)) == sorted(map(repr, original))
    for side in (train, test):
        positions = [original.index(row) for row in side]
        assert positions == sorted(positions)
    assert len(test) == round(len(original) * 0.3)


# Headers as a user's file has them: spaces and another column the loader does not use.
ODD_HEADER = [" Query ", "Ground truth document", "Ground truth answer", "Difficulty", "Ghi chú"]


def _odd_rows() -> list[list[str]]:
    queries = distinct_queries(20)
    return [[q, f"{i + 1}, {i + 2}", f"dòng 1\ndòng 2, \"trích\" {i}", "", f"00{i}"] for i, q in enumerate(queries)]


@pytest.mark.parametrize("suffix, delimiter, bom", [(".csv", ",", True), (".csv", ",", False), (".tsv", "\t", False)])
def test_csv_and_tsv_keep_their_rows_columns_and_byte_order_mark(tmp_path, suffix, delimiter, bom):
    source = write_csv(tmp_path / f"q{suffix}", ODD_HEADER, _odd_rows(), bom=bom, delimiter=delimiter)
    proc = split("--train_data", str(source), "--test_ratio", "0.3", "--output_dir", str(tmp_path / "out"),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header, original = read_csv(source, delimiter)
    sides = [tmp_path / "out" / f"q_{side}{suffix}" for side in ("train", "test")]
    for path in sides:
        assert read_csv(path, delimiter)[0] == header
        assert path.read_bytes().startswith(codecs.BOM_UTF8) is bom
    _check_partition(original, read_csv(sides[0], delimiter)[1], read_csv(sides[1], delimiter)[1])


def test_xlsx_keeps_rows_columns_cell_types_and_sheet_name(tmp_path):
    source = tmp_path / "q.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Câu hỏi"
    sheet.append(ODD_HEADER)
    for i, query in enumerate(distinct_queries(20)):
        sheet.append([query, i + 1 if i % 2 else f"{i + 1}, {i + 3}", f"trả lời {i}" if i % 3 else None, i % 3 + 1,
                      f"00{i}"])
    workbook.save(source)
    proc = split("--train_data", str(source), "--test_ratio", "0.3", "--output_dir", str(tmp_path / "out"),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    def cells(path: Path) -> tuple[str, list[list]]:
        book = openpyxl.load_workbook(path)
        values = [list(row) for row in book.active.iter_rows(values_only=True)]
        return book.active.title, values

    title, original = cells(source)
    sides = [cells(tmp_path / "out" / f"q_{side}.xlsx") for side in ("train", "test")]
    for side_title, values in sides:
        assert side_title == title and values[0] == original[0]
    _check_partition(original[1:], sides[0][1][1:], sides[1][1][1:])


def test_jsonl_keeps_each_line_byte_for_byte(tmp_path):
    records = [{"query": q, "relevant_ids": [i + 1], "extra": {"nested": [i]}} for i, q in enumerate(distinct_queries(20))]
    lines = [json.dumps(r, ensure_ascii=i % 2 == 0) for i, r in enumerate(records)]
    lines[3] = lines[3].replace(", ", ",   ")  # spacing a re-serialisation would lose
    source = tmp_path / "q.jsonl"
    source.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n", encoding="utf-8")
    proc = split("--train_data", str(source), "--test_ratio", "0.3", "--output_dir", str(tmp_path / "out"),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sides = [(tmp_path / "out" / f"q_{side}.jsonl").read_text(encoding="utf-8").splitlines()
             for side in ("train", "test")]
    _check_partition(lines, *sides)


# ---------------------------------------------------------------------------- bad input


def _small(tmp_path: Path, queries: list[str] | None = None, name: str = "q.csv") -> Path:
    return write_csv(tmp_path / name, HEADER, rows_for(queries if queries is not None else distinct_queries(10)))


BAD = {
    "ratio 0": (lambda p: _small(p), ["--test_ratio", "0"], "--test_ratio must be in (0, 1), got 0.0"),
    "ratio 1": (lambda p: _small(p), ["--test_ratio", "1"], "--test_ratio must be in (0, 1), got 1.0"),
    "ratio negative": (lambda p: _small(p), ["--test_ratio", "-0.2"], "--test_ratio must be in (0, 1)"),
    "ratio nan": (lambda p: _small(p), ["--test_ratio", "nan"], "--test_ratio must be in (0, 1), got nan"),
    "ratio leaves test empty": (lambda p: _small(p), ["--test_ratio", "0.01"], "leaves the test side empty"),
    "ratio leaves train empty": (lambda p: _small(p), ["--test_ratio", "0.99"], "leaves the train side empty"),
    "all one question": (lambda p: _small(p, PLANTED[0]), ["--test_ratio", "0.5"], "smallest group of near-copy"),
    "no query column": (lambda p: write_csv(p / "q.csv", ["question", "ids"], [["a?", "1"], ["b?", "2"]]), [],
                        "needs columns ('Query') or ('query'); found 'ids', 'question'"),
    "header only": (lambda p: write_csv(p / "q.csv", HEADER, []), [], "holds no queries"),
    "empty jsonl": (lambda p: (p / "q.jsonl").write_text("\n", encoding="utf-8") and p / "q.jsonl", [],
                    "holds no queries"),
    "blank query": (lambda p: _small(p, distinct_queries(5) + ["  "]), [], "row 7: blank query in column 'Query'"),
    "missing file": (lambda p: p / "nope.csv", [], "--train_data: file not found"),
    "unsupported format": (lambda p: (p / "q.json").write_text("[]", encoding="utf-8") and p / "q.json", [],
                           "reads and writes .csv, .txt, .tsv, .xlsx, .jsonl files, not '.json'"),
    "pii redact": (lambda p: _small(p), ["--pii", "redact"], "--pii redact: python -m ragtune.split writes the rows"),
    "pii error": (lambda p: _small(p, distinct_queries(9) + ["Gọi 0912 345 678 để hỏi về CLB"]), ["--pii", "error"],
                  "--pii error: 1 personal value(s) found"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, case):
    make, extra, message = BAD[case]
    source = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    proc = split("--train_data", str(source), "--output_dir", str(out), "--report", str(tmp_path / "audit.md"),
                 *extra, cwd=tmp_path)
    assert_one_clear_error(proc, message, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_outputs_that_exist_need_overwrite_and_the_input_is_never_one(tmp_path):
    source = _small(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "q_test.csv").write_text("kept\n", encoding="utf-8")
    proc = split("--train_data", str(source), "--output_dir", str(out), cwd=tmp_path)
    assert_one_clear_error(proc, f"--output_dir: {out / 'q_test.csv'} already exists; pass --overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["q_test.csv"]
    assert (out / "q_test.csv").read_text(encoding="utf-8") == "kept\n"

    proc = split("--train_data", str(source), "--output_dir", str(out), "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "q_test.csv").read_text(encoding="utf-8-sig").startswith("Query,")

    # An output name that is a link to the input: overwriting it would destroy the input, --overwrite or not.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "q_train.csv").symlink_to(source)
    before = digest(source)
    proc = split("--train_data", str(source), "--output_dir", str(linked), "--overwrite", cwd=tmp_path)
    assert_one_clear_error(proc, f"the train side of --output_dir {linked / 'q_train.csv'} is the same path as "
                                 "--train_data: writing there would overwrite your input; choose another --output_dir")
    assert digest(source) == before and sorted(p.name for p in linked.iterdir()) == ["q_train.csv"]


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    source = _small(tmp_path)
    (tmp_path / "out").write_text("a file", encoding="utf-8")
    proc = split("--train_data", str(source), "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_clear_error(proc, "is a file, not a folder")


def test_the_report_and_corpus_audit(tmp_path, planted_csv):
    corpus = write_csv(tmp_path / "corpus.csv", ["STT", "Văn bản"],
                       [[str(i), f"Đoạn văn {i} nói về câu lạc bộ và các hoạt động của nó trong năm học"]
                        for i in range(1, 4)])
    proc = split("--train_data", str(planted_csv), "--output_dir", str(tmp_path / "out"), "--corpus", str(corpus),
                 "--report", str(tmp_path / "audit.md"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["audit"]
    assert summary["duplicate_passages"]["groups"] == 1 and summary["leakage"]["leaked_test_queries"] == 0
    assert "## Train/test leakage" in (tmp_path / "audit.md").read_text(encoding="utf-8")
