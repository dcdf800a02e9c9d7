"""The data audit: personal information, leakage, duplicates. No models; seconds.

The command line (``python -m ragtune.audit``) is in tests/e2e/test_audit_cli.py.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from planted_pii import PLANTED, assert_nothing_leaks

from ragtune.audit import (
    add_audit_args,
    find_conflicting_labels,
    find_duplicate_passages,
    find_leakage,
    find_pii,
    mask_text,
    pii_publish_refusal,
    run_audit,
    write_audit_report,
)
from ragtune.audit.pii import PROVINCE_CODES
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError

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


@pytest.mark.parametrize("sentence,kind,value", PLANTED, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(PLANTED)])
def test_planted_personal_information_is_found_and_masked(sentence, kind, value):
    findings = find_pii(sentence)
    assert [(f.kind, f.value) for f in findings if f.value == value] == [(kind, value)], findings
    finding = next(f for f in findings if f.value == value)
    assert "•" in finding.masked
    assert_nothing_leaks(finding.masked + " " + mask_text(sentence) + " " + repr(finding))


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
        result = run_audit(_corpus(), _train(), _test(), policy="warn",
                           sources={"corpus": "corpus.csv", "train": "train.csv", "test": "test.csv"})
        write_audit_report(result, report)
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
        assert_nothing_leaks(text)
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


def test_error_policy_raises():
    with pytest.raises(UserError, match=r"--pii error: 4 personal value\(s\)") as err:
        run_audit(_corpus(), _train(), policy="error")
    assert_nothing_leaks(str(err.value))


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


def test_publish_refusal_only_for_unredacted_personal_information():
    warned = run_audit(_corpus(), _train(), policy="warn").summary()
    reason = pii_publish_refusal({"data_audit": warned, "ndcg@10": 0.5})
    assert reason and "4 personal value(s)" in reason and "--allow_pii" in reason
    assert pii_publish_refusal({"data_audit": run_audit(_corpus(), _train(), policy="redact").summary()}) is None
    clean = run_audit(Corpus(ids=["1"], texts=["CLB có 150 thành viên."]), [LabelledQuery("x", ["1"])]).summary()
    assert pii_publish_refusal({"data_audit": clean}) is None
    assert pii_publish_refusal({"ndcg@10": 0.5}) is None  # trained before the audit existed: nothing recorded
