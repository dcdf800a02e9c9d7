"""The data audit: personal information, leakage, duplicates. No models; seconds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ragtune.audit import (add_audit_args, find_conflicting_labels, find_duplicate_passages, find_leakage, find_pii,
                           mask_text, pii_publish_refusal, run_audit)
from ragtune.audit.pii import PROVINCE_CODES
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent

# (sentence, kind, planted value as written). Values are fictitious but valid for their numbering plans.
PLANTED = [
    ("Liên hệ bạn Nam qua email nguyen.van.nam99@gmail.com nhé.", "email", "nguyen.van.nam99@gmail.com"),
    ("SĐT của chị Hoa: 0912 345 678, gọi sau 8h.", "phone", "0912 345 678"),
    ("Gọi anh Tuấn 0987.654.321 để đăng ký.", "phone", "0987.654.321"),
    ("Zalo trưởng ban: +84 355-123-456.", "phone", "+84 355-123-456"),
    ("Hotline cá nhân 84901234567 luôn bật.", "phone", "84901234567"),
    ("Văn phòng khoa: (024) 3756 2186.", "phone", "(024) 3756 2186"),
    ("Số 0786123456-0563987654 là của hai bạn lớp trưởng.", "phone", "0786123456"),
    ("Căn cước công dân 001203012345 cấp năm 2021.", "cccd", "001203012345"),
    ("CCCD: 079 303 004 567.", "cccd", "079 303 004 567"),
    ("Số CMND: 012345678 do công an Hà Nội cấp.", "cmnd", "012345678"),
    ("chứng minh nhân dân số 187 654 321", "cmnd", "187 654 321"),
    ("Chuyển khoản vào STK 1903 4567 8901 23 Techcombank.", "bank_account", "1903 4567 8901 23"),
    ("số tài khoản Vietcombank: 0011004123456 chủ tài khoản Lê Văn A", "bank_account", "0011004123456"),
    ("MSSV: B21DCCN123, lớp D21CQCN01.", "student_id", "B21DCCN123"),
    ("mã sinh viên của em là 20210567", "student_id", "20210567"),
    ("Em sinh ngày 12/03/2003 tại Hải Phòng.", "dob", "12/03/2003"),
    ("Ngày sinh: 5 tháng 7 năm 2002.", "dob", "5 tháng 7 năm 2002"),
    ("so tai khoan 0123456789012 (khong dau)", "bank_account", "0123456789012"),
]

# Numbers that look like personal information and are not.
LOOKALIKES = [
    "CLB được thành lập năm 2011, Chủ nhiệm khóa 2011-2012 và khóa 2016-2017.",
    "Học phí 1.500.000 đồng, giải nhất 12.000.000 đ, quỹ 250000000 VNĐ.",
    "CLB có 150 thành viên, 12 ban và 3 đội thi.",
    "Ngày 12/03/2023 CLB tổ chức sự kiện; hạn chót 05-07-2024.",
    "Mã đơn hàng 123456789012 không phải căn cước (mã tỉnh 123 không tồn tại).",
    "Mã 000203012345 và 097203012345 có mã tỉnh không hợp lệ.",
    "Văn bản doc_0912345678, passage P-0912345678 và ảnh0912345678.jpg.",
    "Tệp 0912345678_v2.pdf, mã 0912345678ABC và 0912345678-bis.",
    "Số thứ tự 123456789 trong danh sách.",
    "Mang CMND và thẻ dự thi 2023456789 khi đi thi.",
    "Bạn ấy sinh năm 2003.",
    "Ngày sinh nhật CLB: 9/10/2011.",
    "Công ty ABC, MST: 0312345678; sách ISBN 978-604-0-12345-6.",
    "Nạp vào tài khoản 50.000.000 đồng để tham gia.",
    "Tổng đài 1900 1234 56 và 1800 599 920 miễn phí.",
    "Mỗi tài khoản được 3 lượt bình chọn.",
    "Các năm 2019 2020 2021 2022 đều có giải.",
    "Tỉ lệ 0.5 và số pi 3.14159265358.",
    "Đầu số 0521234567 chưa được cấp phát.",
    "Liên hệ lienhe.raic@dhcnsonghan.edu.vn hoặc info@proptit.com.",
    "Phòng C2.05, tòa A1, tầng 3.",
    "Điểm trung bình 8.5/10, top 10% và mã môn INT1234.",
]


def _compact(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z@.]", "", value)


def _assert_nothing_leaks(text: str) -> None:
    """No planted value appears in full, as written or with its separators removed."""
    squeezed = re.sub(r"[ .\-()+/]", "", text)
    for _, kind, value in PLANTED:
        assert value not in text, f"{kind} value leaked in full"
        if kind != "email" and len(_compact(value)) >= 6:
            assert re.sub(r"[ .\-()+/]", "", value) not in squeezed, f"{kind} value leaked without separators"


@pytest.mark.parametrize("sentence,kind,value", PLANTED, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(PLANTED)])
def test_planted_personal_information_is_found_and_masked(sentence, kind, value):
    findings = find_pii(sentence)
    assert [(f.kind, f.value) for f in findings if f.value == value] == [(kind, value)], findings
    finding = next(f for f in findings if f.value == value)
    assert "•" in finding.masked
    _assert_nothing_leaks(finding.masked + " " + mask_text(sentence) + " " + repr(finding))


def test_masks_keep_a_short_prefix_and_suffix():
    assert find_pii("SĐT 0912345123")[0].masked == "09•••••123"
    assert find_pii("SĐT +84912345123")[0].masked == "+84••••••123"
    assert find_pii("mail tran.thi.b@gmail.com")[0].masked.endswith("@gmail.com")


def test_brackets_around_a_whole_number_stay_outside_the_placeholder():
    corpus = Corpus(ids=["1"], texts=["Gọi (0912345678) hoặc (+84) 987 654 321 hoặc (024) 3756 2186."])
    result = run_audit(corpus, [LabelledQuery("x", ["1"], row=2)], policy="redact")
    assert result.corpus.texts == ["Gọi ([SĐT_1]) hoặc [SĐT_2] hoặc [SĐT_3]."]


def test_two_numbers_glued_by_a_dash_are_two_phones():
    assert [f.kind for f in find_pii("Số 0786123456-0563987654 nhé")] == ["phone", "phone"]


@pytest.mark.parametrize("sentence", LOOKALIKES)
def test_lookalikes_are_not_flagged(sentence):
    assert find_pii(sentence) == []


def test_cccd_province_codes_are_the_official_63():
    assert len(PROVINCE_CODES) == 63
    assert {"001", "048", "079", "092", "096"} <= PROVINCE_CODES
    # Codes that no province holds (gaps in the list) and codes past Cà Mau.
    assert not {"000", "003", "005", "007", "009", "013", "016", "018", "021", "023", "028", "029", "032", "039",
                "041", "043", "047", "050", "053", "055", "057", "059", "061", "063", "065", "069", "071", "073",
                "076", "078", "081", "085", "088", "090", "097", "099"} & PROVINCE_CODES
    assert find_pii("CCCD 048203012345")[0].kind == "cccd"
    assert find_pii("CCCD 047203012345") == []  # 047 is no province
    assert find_pii("CCCD 001903012345") == []  # 4th digit 9: born in the 24th century


def test_text_in_nfd_form_is_scanned_like_nfc():
    import unicodedata

    text = unicodedata.normalize("NFD", "Số tài khoản: 0011004123456, sinh ngày 01/02/2003")
    assert sorted(f.kind for f in find_pii(text)) == ["bank_account", "dob"]


# ---------------------------------------------------------------------------- run_audit


def _corpus() -> Corpus:
    return Corpus(ids=["1", "2", "3", "4", "5"], texts=[
        "CLB Lập trình thành lập năm 2011. Liên hệ chủ nhiệm qua 0912 345 678 hoặc nguyen.van.nam99@gmail.com.",
        "Thành viên đóng quỹ 50.000 đồng mỗi tháng vào STK 1903 4567 8901 23 Techcombank.",
        "Lịch sinh hoạt: thứ Bảy hằng tuần tại phòng 302, từ 8h đến 11h, mọi thành viên đều tham gia.",
        "Lịch sinh hoạt: thứ bảy hằng tuần tại phòng 302 từ 8h đến 11h, mọi thành viên đều tham gia!",
        "CLB có 150 thành viên và 12 ban chuyên môn.",
    ], source="corpus.csv")


def _train() -> list[LabelledQuery]:
    return [
        LabelledQuery("Số điện thoại chủ nhiệm là gì?", ["1"], answer="Gọi +84912345678 nhé.", row=2),
        LabelledQuery("CLB sinh hoạt vào thứ mấy?", ["3"], row=3),
        LabelledQuery("Câu lạc bộ được thành lập năm nào?", ["1"], row=4),
        LabelledQuery("CLB sinh hoạt vào thứ mấy ?", ["4"], row=5),  # same question, other label
    ]


def _test() -> list[LabelledQuery]:
    return [
        LabelledQuery("nam nao cau lac bo duoc thanh lap", ["1"], row=2),  # accents dropped, words reordered
        LabelledQuery("CLB có bao nhiêu ban chuyên môn?", ["5"], row=3),
    ]


def test_warn_logs_a_masked_table_and_counts(caplog, tmp_path):
    report = tmp_path / "audit.md"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        result = run_audit(_corpus(), _train(), _test(), policy="warn", report_path=report,
                           sources={"corpus": "corpus.csv", "train": "train.csv", "test": "test.csv"})
    assert result.pii_counts == {"email": 1, "phone": 2, "bank_account": 1}
    assert not result.redacted and result.corpus.texts == _corpus().texts
    rows = {(f.file, f.row, f.field, f.kind) for f in result.pii_findings}
    assert ("train.csv", "2", "answer", "phone") in rows and ("corpus.csv", "id 2", "text", "bank_account") in rows
    assert "09•••••678" in caplog.text and "09•••••678" in report.read_text(encoding="utf-8")
    summary = result.summary()
    assert summary["pii"] == {"policy": "warn", "checked": True, "counts": result.pii_counts, "total": 4,
                              "redacted": False}
    assert pii_publish_refusal({"data_audit": summary}) is not None
    for text in (caplog.text, report.read_text(encoding="utf-8"), json.dumps(summary, ensure_ascii=False)):
        _assert_nothing_leaks(text)
        assert "0912345678" not in text and "912345678" not in re.sub(r"\D", "", text)


def test_redact_gives_the_same_placeholder_to_the_same_value_everywhere():
    corpus, train = _corpus(), _train()
    result = run_audit(corpus, train, _test(), policy="redact")
    assert result.redacted
    # "0912 345 678" in the corpus and "+84912345678" in an answer are one number: one placeholder.
    assert "[SĐT_1]" in result.corpus.texts[0] and result.train[0].answer == "Gọi [SĐT_1] nhé."
    assert "[EMAIL_1]" in result.corpus.texts[0] and "[STK_1]" in result.corpus.texts[1]
    assert "STK [STK_1] Techcombank" in result.corpus.texts[1]
    assert find_pii(" ".join(result.corpus.texts + [q.answer for q in result.train])) == []
    # The inputs are untouched: copies were redacted.
    assert corpus.texts == _corpus().texts and train[0].answer == "Gọi +84912345678 nhé."
    assert result.corpus.ids == corpus.ids and [q.relevant_ids for q in result.train] == [q.relevant_ids for q in train]
    assert pii_publish_refusal({"data_audit": result.summary()}) is None


def test_redact_numbers_placeholders_per_kind_in_order_of_appearance():
    corpus = Corpus(ids=["1", "2"], texts=["Email a.nguyen01@gmail.com và b.tran02@yahoo.com",
                                           "Lại là A.Nguyen01@gmail.com, SĐT 0987654321"])
    result = run_audit(corpus, [LabelledQuery("x", ["1"], row=2)], policy="redact")
    assert result.corpus.texts == ["Email [EMAIL_1] và [EMAIL_2]", "Lại là [EMAIL_1], SĐT [SĐT_1]"]


def test_error_policy_raises_before_writing(tmp_path):
    report = tmp_path / "out" / "audit.md"
    with pytest.raises(UserError, match=r"--pii error: 4 personal value\(s\)") as err:
        run_audit(_corpus(), _train(), policy="error", report_path=report)
    _assert_nothing_leaks(str(err.value))
    assert not report.exists() and not report.parent.exists()


def test_off_skips_the_scan_but_not_leakage():
    result = run_audit(_corpus(), _train(), _test(), policy="off")
    assert result.pii_findings == [] and result.summary()["pii"]["checked"] is False
    assert result.leaked_test_indices == {0}


def test_leakage_ignores_accents_case_punctuation_and_word_order():
    train, test = _train(), _test()
    pairs = find_leakage(train, test)
    assert [(p.train_index, p.test_index, p.exact) for p in pairs] == [(2, 0, True)]
    # One word changed in a 9-word question still counts; a different question on the same topic does not.
    near = [LabelledQuery("Câu lạc bộ được thành lập vào năm nào vậy?", ["1"])]
    assert find_leakage(near, [LabelledQuery("Câu lạc bộ được thành lập vào năm nào thế?", ["1"])])
    assert not find_leakage(near, [LabelledQuery("Câu lạc bộ có bao nhiêu thành viên vào năm nay?", ["1"])])
    # The closest pair of different questions among the NeoRAG train queries (Jaccard 0.62) is not a leak.
    assert not find_leakage([LabelledQuery("CLB có những hình thức khen thưởng nào cho thành viên xuất sắc?", ["99"])],
                            [LabelledQuery("CLB có những hình thức khen thưởng nào ngoài “Thành viên tiêu biểu”?",
                                           ["98", "99"])])


def test_duplicate_passages_and_conflicting_labels_are_found():
    corpus = _corpus()
    groups = find_duplicate_passages(corpus)
    assert [(g.ids, g.kind) for g in groups] == [(("3", "4"), "exact")]
    long = " ".join(f"câu {i} nói về hoạt động thứ {i} của câu lạc bộ" for i in range(20))
    near = Corpus(ids=["a", "b", "c"], texts=[long, long.replace("câu 7 ", "câu bảy "), "khác hẳn " * 30])
    assert [(g.ids, g.kind) for g in find_duplicate_passages(near)] == [(("a", "b"), "near")]
    conflicts = find_conflicting_labels({"train": _train()})
    assert len(conflicts) == 1
    assert [(name, row, ids) for name, row, ids in conflicts[0].occurrences] == [("train", 3, ("3",)),
                                                                                 ("train", 5, ("4",))]
    summary = run_audit(corpus, _train(), policy="off").summary()
    assert summary["duplicate_passages"]["queries_with_unlabelled_twin"] == 2
    assert summary["conflicting_labels"] == 1


def test_add_audit_args_defaults_to_warn():
    import argparse

    parser = argparse.ArgumentParser()
    add_audit_args(parser)
    assert parser.parse_args([]).pii == "warn"
    assert parser.parse_args(["--pii", "redact", "--audit_report", "a.md"]).audit_report == Path("a.md")
    with pytest.raises(SystemExit):
        parser.parse_args(["--pii", "maybe"])


# ---------------------------------------------------------------------------- CLI (real subprocess)


def _write_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"STT": [1, 2, 3], "Văn bản": [s for s, _, _ in PLANTED[:3]]}).to_csv(
        corpus, index=False, encoding="utf-8-sig")
    train = tmp_path / "train.csv"
    pd.DataFrame({"Query": [s for s, _, _ in PLANTED[3:]] + ["Câu lạc bộ được thành lập năm nào?"],
                  "Ground truth document": [1] * (len(PLANTED) - 3) + [2],
                  "Ground truth answer": ["ok"] * (len(PLANTED) - 2)}).to_csv(train, index=False, encoding="utf-8-sig")
    test = tmp_path / "test.csv"
    pd.DataFrame({"Query": ["nam nao cau lac bo duoc thanh lap"], "Ground truth document": [2]}).to_csv(
        test, index=False, encoding="utf-8-sig")
    return corpus, train, test


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ragtune.audit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _digests(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_cli_warn_and_redact_leave_sources_untouched_and_print_no_value(tmp_path):
    files = _write_files(tmp_path)
    before = _digests(*files)
    for policy in ("warn", "redact"):
        report = tmp_path / f"audit-{policy}.md"
        proc = _cli("--corpus", str(files[0]), "--train_data", str(files[1]), "--test_data", str(files[2]),
                    "--pii", policy, "--report", str(report), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        # One sentence holds two phones.
        assert summary["pii"]["total"] == len(PLANTED) + 1 and summary["pii"]["redacted"] is (policy == "redact")
        assert summary["leakage"]["leaked_test_queries"] == 1
        text = report.read_text(encoding="utf-8")
        assert "09•••••678" in text
        for output in (proc.stdout, proc.stderr, text):
            _assert_nothing_leaks(output)
    assert _digests(*files) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit-redact.md", "audit-warn.md", "corpus.csv",
                                                          "test.csv", "train.csv"]


def test_cli_error_exits_2_with_one_line_and_writes_nothing(tmp_path):
    files = _write_files(tmp_path)
    before = _digests(*files)
    report = tmp_path / "audit.md"
    proc = _cli("--corpus", str(files[0]), "--train_data", str(files[1]), "--pii", "error", "--report", str(report),
                "--summary_json", str(tmp_path / "summary.json"), cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "--pii error" in errors[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    _assert_nothing_leaks(proc.stderr)
    assert not report.exists() and not (tmp_path / "summary.json").exists()
    assert _digests(*files) == before


def test_cli_missing_file_is_a_user_error(tmp_path):
    proc = _cli("--corpus", str(tmp_path / "nope.csv"), "--train_data", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert proc.returncode == 2 and "--corpus: file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_publish_refusal_only_for_unredacted_personal_information():
    warned = run_audit(_corpus(), _train(), policy="warn").summary()
    reason = pii_publish_refusal({"data_audit": warned, "ndcg@10": 0.5})
    assert reason and "4 personal value(s)" in reason and "--allow_pii" in reason
    assert pii_publish_refusal({"data_audit": run_audit(_corpus(), _train(), policy="redact").summary()}) is None
    clean = run_audit(Corpus(ids=["1"], texts=["CLB có 150 thành viên."]), [LabelledQuery("x", ["1"])]).summary()
    assert pii_publish_refusal({"data_audit": clean}) is None
    assert pii_publish_refusal({"ndcg@10": 0.5}) is None  # trained before the audit existed: nothing recorded
