"""Personal information planted in test data: fictitious values, valid for their numbering plans, and the check
that none of them shows in an output. Shared by the audit's unit tests and its command-line tests."""

from __future__ import annotations

import re

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


def _compact(value: str) -> str:
    return re.sub(r"[^0-9A-Za-z@.]", "", value)


def assert_nothing_leaks(text: str) -> None:
    """No planted value appears in full, as written or with its separators removed."""
    squeezed = re.sub(r"[ .\-()+/]", "", text)
    for _, kind, value in PLANTED:
        assert value not in text, f"{kind} value leaked in full"
        if kind != "email" and len(_compact(value)) >= 6:
            assert re.sub(r"[ .\-()+/]", "", value) not in squeezed, f"{kind} value leaked without separators"
