"""Personal information in Vietnamese text: detection, masking and consistent redaction.

Why: a fine-tuned model can reproduce its training text, and a published one does so for anyone.
Club documents and hand-written queries carry phone numbers, emails, ID-card and student numbers.

What is flagged (text is NFC-normalised first; digits may be grouped by single spaces, dots or dashes):
  email        ASCII addresses ``name@domain.tld``, except role accounts whose name starts with a word like
               lienhe / contact / info / admin / support / hotro / tuyensinh (``ROLE_MAILBOXES``): an
               organisation's contact address is published on purpose and names no person.
  phone        Vietnamese mobiles (0 + 3/5/7/8/9 + 8 digits) and landlines (0 + 2x + 8 digits), also written
               ``+84``/``84``/``0084`` + number; ``phonenumbers`` must call the number valid for VN, so
               unassigned prefixes (052, 069, ...) are not flagged.
  cccd         12-digit citizen ids whose first 3 digits are one of the 63 province codes (001..096, see
               ``PROVINCE_CODES``) and whose 4th digit (sex + century) is 0-3 (born 1900-2099).
  cmnd         9-digit old ID-card numbers, only right after CMND / CMT / chứng minh (nhân dân / thư).
  bank_account 8-19 digits, only right after STK / số tài khoản / tài khoản (not when followed by a
               currency word: "nạp vào tài khoản 50.000.000 đồng" is an amount).
  student_id   6-15 letters/digits with at least 4 digits, only right after MSSV / mã sinh viên / mã SV.
  dob          a full date (12/03/2003, 12-3-03, 12 tháng 3 năm 2003) right after "sinh ngày" / "ngày sinh".
Keywords also match without diacritics ("so tai khoan", "sinh ngay").

Deliberately NOT flagged (each would flood the report with false positives, or is not personal):
  years and year ranges (2023, 2011-2012), prices and amounts (1.500.000 đồng), counts, plain dates
  (12/03/2023 without "sinh ngày"), "sinh năm 2003" (a year alone), passage ids and numbers glued to
  an identifier (doc_0912345678, P-0912345678, ảnh0912345678.jpg), 12-digit numbers with an invalid province
  code, 9-digit numbers without a CMND keyword, toll-free/premium lines (1800/1900, business numbers),
  company tax codes and ISBNs (numbers right after MST / mã số thuế / ISBN), foreign phone numbers,
  "ngày sinh nhật" (an anniversary, not a birth date), digits spelled one by one ("0 9 1 2 ..."), names
  and street addresses (no reliable pattern; a name list would flag every club officer named in the
  corpus), and PTIT-style student ids (B21DCCN123) without a keyword.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import phonenumbers

from ragtune.core.redaction import set_data_masker

KINDS = ("email", "phone", "cccd", "cmnd", "bank_account", "student_id", "dob")

# Placeholder labels for redaction: ``[SĐT_1]``, ``[EMAIL_2]``.
PLACEHOLDER_LABELS = {
    "email": "EMAIL",
    "phone": "SĐT",
    "cccd": "CCCD",
    "cmnd": "CMND",
    "bank_account": "STK",
    "student_id": "MSSV",
    "dob": "NGÀY_SINH",
}

# Province codes that open a CCCD number (Thông tư 07/2016/TT-BCA, Điều 7; the codes of the 63 provinces
# before the 2025 merger - cards keep the code of the place of birth registration, so all 63 stay valid).
PROVINCE_CODES = frozenset({
    "001", "002", "004", "006", "008", "010", "011", "012", "014", "015", "017", "019", "020", "022", "024",
    "025", "026", "027", "030", "031", "033", "034", "035", "036", "037", "038", "040", "042", "044", "045",
    "046", "048", "049", "051", "052", "054", "056", "058", "060", "062", "064", "066", "067", "068", "070",
    "072", "074", "075", "077", "079", "080", "082", "083", "084", "086", "087", "089", "091", "092", "093",
    "094", "095", "096",
})
assert len(PROVINCE_CODES) == 63

MASK_CHAR = "•"

ROLE_MAILBOXES = frozenset({
    "lienhe", "contact", "info", "admin", "support", "hotro", "tuyensinh", "tuyendung", "noreply", "no-reply",
    "webmaster", "office", "vanphong", "hr", "careers", "jobs", "press", "marketing", "sales", "help", "helpdesk",
    "daotao", "ctsv", "phongdaotao", "feedback", "hello", "team", "postmaster", "abuse",
})


@dataclass(frozen=True)
class PiiFinding:
    """One personal value. ``value`` stays in memory for redaction and is never rendered (repr=False)."""

    kind: str
    start: int
    end: int
    value: str = field(repr=False)
    masked: str
    file: str = ""
    row: str = ""
    field: str = ""

    def key(self) -> tuple[str, str]:
        """Identity of the value: the same person's number written differently gets one placeholder."""
        return self.kind, canonical_value(self.kind, self.value)

    def as_row(self) -> dict[str, str]:
        """JSON/report-safe view (masked value only)."""
        return {"file": self.file, "row": self.row, "field": self.field, "kind": self.kind, "masked": self.masked}


# ---------------------------------------------------------------------------- patterns

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*"  # name
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w@])")  # @domain.tld

# A run of digit groups joined by one space, dot or dash ("0912 345 678", "0912.345.678", "+84 912-345-678").
# Groups stay atomic: "20112012" is one group and is never split into smaller numbers. The leading
# "(" of "(024) 3756 2186" is allowed by _GROUP_JOIN.
_DIGIT_RUN = re.compile(r"(?:\+|\(\+?)?\d+(?:\)?(?:[ .\-]|\) ?)\d+)*\)?")
_GROUP = re.compile(r"\d+")

# Glued to an identifier on the left (doc_0912..., P-0912..., /0912...) or on the right (0912..._v2, 0912....jpg).
_IDENT_LEFT = re.compile(r"\w[_\-/#\\]$|[^\W\d]$")
_IDENT_RIGHT = re.compile(r"^(?:[_/\\]\w|[.\-][^\W\d]|[^\W\d]|%)")

_CURRENCY_AFTER = re.compile(r"^\s*(?:đồng|đ\b|vnđ|vnd|₫|k\b|nghìn|ngàn|triệu|tr\b|tỷ|tỉ|usd|\$|%)", re.IGNORECASE)

# Keyword contexts. The filler between keyword and value is short and stays inside the clause.
_FILLER = r"[^\d\n.;!?()]{0,%d}?"


def _kw(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


_CMND_KW = _kw(r"cmnd", r"cmt", r"ch[ứu]ng\s+minh(?:\s+nh[âa]n\s+d[âa]n|\s+th[ưu])?", r"cmnd/cccd", r"cccd/cmnd")
_BANK_KW = _kw(r"stk", r"s[ốo]\s+t[àa]i\s+kho[ảa]n", r"t[àa]i\s+kho[ảa]n", r"tk\s+ng[âa]n\s+h[àa]ng")
_STUDENT_KW = _kw(r"mssv", r"m[ãa]\s+s[ốo]\s+sinh\s+vi[êe]n", r"m[ãa]\s+sinh\s+vi[êe]n", r"m[ãa]\s+sv", r"msv")
_DOB_KW = _kw(r"sinh\s+ng[àa]y", r"ng[àa]y\s+sinh(?!\s+nh[ậa]t)", r"ng[àa]y\s+th[áa]ng\s+n[ăa]m\s+sinh", r"dob",
              r"date\s+of\s+birth")

_NUMBER_VALUE = r"(\d+(?:[ .\-]\d+)*)"
_CMND_RE = re.compile(r"\b" + _CMND_KW + r"\b" + (_FILLER % 25) + _NUMBER_VALUE, re.IGNORECASE)
_BANK_RE = re.compile(r"\b" + _BANK_KW + r"\b" + (_FILLER % 40) + _NUMBER_VALUE, re.IGNORECASE)
_STUDENT_RE = re.compile(r"\b" + _STUDENT_KW + r"\b" + (_FILLER % 20) + r"([A-Za-z0-9]{6,15})\b", re.IGNORECASE)
_DATE = (r"(\d{1,2}\s?[/.\-]\s?\d{1,2}\s?[/.\-]\s?(?:\d{4}|\d{2})"
         r"|\d{1,2}\s+th[áa]ng\s+\d{1,2}\s*(?:,\s*)?n[ăa]m\s+\d{4})(?!\d)")
_DOB_RE = re.compile(r"\b" + _DOB_KW + r"\b" + r"[^\d\n;!?]{0,12}?" + _DATE, re.IGNORECASE)


# ---------------------------------------------------------------------------- helpers


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def canonical_value(kind: str, value: str) -> str:
    """Normal form used for placeholders: E.164 for phones, lower case for emails, digits for ids."""
    if kind == "email":
        return value.lower()
    if kind == "phone":
        number = _parse_phone(value)
        if number is not None:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return _digits(value)
    if kind == "student_id":
        return value.upper()
    if kind == "dob":
        return " ".join(str(int(part)) for part in re.findall(r"\d+", value))
    return _digits(value)


def mask(kind: str, value: str) -> str:
    """``09•••••678``: enough to find the row again, never the whole value."""
    if kind == "email":
        local, _, domain = value.partition("@")
        keep = 2 if len(local) > 4 else 1
        return local[:keep] + MASK_CHAR * max(3, len(local) - keep) + "@" + domain
    if kind == "dob":
        parts = re.findall(r"\d+", value)
        year = parts[-1] if parts else ""
        return f"{MASK_CHAR * 2}/{MASK_CHAR * 2}/{MASK_CHAR * 2}{year[-2:]}"
    compact = value if kind == "student_id" else _digits(value)
    if value.lstrip().startswith("+"):
        compact = "+" + compact
    n = len(compact)
    if n >= 9:
        head, tail = 2 + compact.startswith("+"), 3
    elif n >= 6:
        head, tail = 1, 2
    else:
        head, tail = 0, 1
    return compact[:head] + MASK_CHAR * (n - head - tail) + compact[n - tail:]


def _parse_phone(value: str) -> phonenumbers.PhoneNumber | None:
    digits = _digits(value)
    if value.lstrip(" (").startswith("+"):
        if not digits.startswith("84"):
            return None
        national = digits[2:]
    elif digits.startswith("0084"):
        national = digits[4:]
    elif digits.startswith("84") and len(digits) in (11, 12):
        national = digits[2:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        return None
    # Mobiles: 9 national digits starting 3/5/7/8/9; landlines: 10 digits starting 2.
    if not ((len(national) == 9 and national[0] in "35789") or (len(national) == 10 and national[0] == "2")):
        return None
    try:
        number = phonenumbers.parse("+84" + national, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in (phonenumbers.PhoneNumberType.MOBILE,
                                               phonenumbers.PhoneNumberType.FIXED_LINE,
                                               phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return None
    return number


def _is_cccd(digits: str) -> bool:
    return len(digits) == 12 and digits[:3] in PROVINCE_CODES and digits[3] in "0123"


# Numbering schemes that reuse phone-like digits: company tax codes (HCMC ones start 03, like Viettel mobiles),
# ISBNs. A number right after these words is not a person's.
_NOT_PERSONAL_BEFORE = re.compile(r"(?:\bmst|m[ãa]\s+s[ốo]\s+thu[ếe]|\bisbn)\W{0,3}(?:\w+\W{1,3}){0,2}$", re.IGNORECASE)


def _classify_number(text: str, start: int, end: int) -> str | None:
    """Kind of a digit span found without a keyword: phone or cccd (everything else needs a keyword)."""
    span = text[start:end]
    if _NOT_PERSONAL_BEFORE.search(text[max(0, start - 30):start]):
        return None
    digits = _digits(span)
    if 9 <= len(digits) <= 13 and _parse_phone(span) is not None:
        return "phone"
    if _is_cccd(digits) and not span.lstrip().startswith(("+", "(")):
        return "cccd"
    return None


def _scan_digit_runs(text: str) -> Iterator[tuple[str, int, int]]:
    """Phones and CCCDs inside digit runs; a run may hold several ("0912345678-0987654321")."""
    for run in _DIGIT_RUN.finditer(text):
        run_text = run.group()
        if len(run_text) - sum(map(run_text.count, " .-()+")) < 9:  # years, prices, counts
            continue
        groups = list(_GROUP.finditer(text, run.start(), run.end()))
        # A leading "+" or "(+" belongs to the first group.
        starts = [g.start() for g in groups]
        if run_text.startswith(("+", "(")):
            starts[0] = run.start()
        i = 0
        while i < len(groups):
            found = None
            total = 0
            ends = []
            for j in range(i, len(groups)):
                total += len(groups[j].group())
                if total > 13:
                    break
                ends.append(j)
            for j in reversed(ends):  # longest first
                s, e = starts[i], groups[j].end()
                if (i == 0 and _IDENT_LEFT.search(text[max(0, s - 2):s])) or \
                        (j == len(groups) - 1 and _IDENT_RIGHT.match(text[e:e + 2])):
                    continue
                kind = _classify_number(text, s, e)
                if kind:
                    found = (kind, s, e, j)
                    break
            if found:
                kind, s, e, j = found
                if text[s] == "(" and ")" not in text[s:e]:  # "(0912345678)": the brackets are not the number's
                    s += 1
                yield kind, s, e
                i = j + 1
            else:
                i += 1


_HAS_DIGIT = re.compile(r"\d")
# A cheap first pass: a case-sensitive search on the lower-cased text for a piece that every keyword pattern
# contains. Most passages hold no keyword, and the four case-insensitive patterns are several times slower.
_KEYWORD_STEMS = re.compile(r"cmnd|cmt|ng\s+minh|stk|kho[ảa]n|tk\s+ng|mssv|msv|m[ãa]\s+s|sinh\s+ng|ng[àa]y\s+sinh"
                            r"|n[ăa]m\s+sinh|dob|birth")
# At least 9 digits joined by separators: anything shorter cannot be a phone (0 + 9 digits) or a CCCD (12).
_LONG_NUMBER = re.compile(r"\d(?:[ .\-()]{0,2}\d){8}")


def _keyword_findings(text: str) -> Iterator[tuple[str, int, int]]:
    if not _KEYWORD_STEMS.search(text.lower()):
        return
    for match in _CMND_RE.finditer(text):
        digits = _digits(match.group(1))
        if len(digits) == 9 or (len(digits) == 12 and not _is_cccd(digits)):
            yield "cmnd", match.start(1), match.end(1)
    for match in _BANK_RE.finditer(text):
        digits = _digits(match.group(1))
        if 8 <= len(digits) <= 19 and not _CURRENCY_AFTER.match(text[match.end(1):]):
            yield "bank_account", match.start(1), match.end(1)
    for match in _STUDENT_RE.finditer(text):
        value = match.group(1)
        if sum(c.isdigit() for c in value) >= 4 and not re.fullmatch(r"(?:19|20)\d\d", value):
            yield "student_id", match.start(1), match.end(1)
    for match in _DOB_RE.finditer(text):
        yield "dob", match.start(1), match.end(1)


def find_pii(text: str) -> list[PiiFinding]:
    """All personal values in one text (NFC), sorted by position, overlaps resolved (keyword kinds win).

    Offsets refer to ``unicodedata.normalize("NFC", text)``.
    """
    text = unicodedata.normalize("NFC", text)
    spans: list[tuple[str, int, int]] = []
    if "@" in text:
        spans.extend(("email", m.start(), m.end()) for m in _EMAIL.finditer(text)
                     if re.split(r"[._+@-]", m.group().lower(), maxsplit=1)[0] not in ROLE_MAILBOXES)
    if _HAS_DIGIT.search(text):  # every other kind holds digits
        spans.extend(_keyword_findings(text))
        if _LONG_NUMBER.search(text):
            spans.extend(_scan_digit_runs(text))
    if not spans:
        return []
    # Keyword kinds first: "STK 0912345678" is an account number (MoMo/bank accounts are often phone
    # numbers) and must not be reported twice; then longer spans first.
    order = ("cmnd", "bank_account", "student_id", "dob", "email", "cccd", "phone")
    priority = {kind: i for i, kind in enumerate(order)}
    spans.sort(key=lambda s: (priority[s[0]], -(s[2] - s[1]), s[1]))
    taken: list[tuple[int, int]] = []
    findings = []
    for kind, start, end in spans:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        value = text[start:end]
        findings.append(PiiFinding(kind=kind, start=start, end=end, value=value, masked=mask(kind, value)))
    findings.sort(key=lambda f: f.start)
    return findings


def mask_text(text: str) -> str:
    """The text with every personal value replaced by its mask: safe to print in a report."""
    text = unicodedata.normalize("NFC", text)
    out, last = [], 0
    for finding in find_pii(text):
        out.append(text[last:finding.start])
        out.append(finding.masked)
        last = finding.end
    out.append(text[last:])
    return "".join(out)


def mask_shown_data(policy: str) -> None:
    """From now on, every text ragtune shows (log lines, model cards, metrics.json, reports) masks personal values
    with :func:`mask_text`, unless ``policy`` is "off" (under "redact" and "error" nothing is left to mask in the
    data, but a model's output or a flag may still hold a value). See ``ragtune.core.redaction.shown``."""
    set_data_masker(None if policy == "off" else mask_text)


class Redactor:
    """Consistent placeholders across every text of a run: one value, one ``[SĐT_1]``."""

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}
        self._counters: dict[str, int] = {}

    def placeholder(self, finding: PiiFinding) -> str:
        key = finding.key()
        if key not in self._placeholders:
            self._counters[finding.kind] = self._counters.get(finding.kind, 0) + 1
            self._placeholders[key] = f"[{PLACEHOLDER_LABELS[finding.kind]}_{self._counters[finding.kind]}]"
        return self._placeholders[key]

    def redact(self, text: str, findings: Iterable[PiiFinding] | None = None) -> str:
        text = unicodedata.normalize("NFC", text)
        findings = find_pii(text) if findings is None else sorted(findings, key=lambda f: f.start)
        out, last = [], 0
        for finding in findings:
            out.append(text[last:finding.start])
            out.append(self.placeholder(finding))
            last = finding.end
        out.append(text[last:])
        return "".join(out)

    @property
    def distinct_values(self) -> int:
        return len(self._placeholders)
