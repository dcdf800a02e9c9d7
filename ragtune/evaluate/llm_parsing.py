"""Reading a model's answer: the JSON in it, 0/1 verdicts, numbered lists, claims, questions.

Models wrap JSON in prose, code fences and <think> blocks, and write verdicts as 1, "yes", true or
"có". Everything here accepts those shapes and raises :class:`ParseError` for anything else, so the
judge can ask again instead of guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from ragtune.generation.llm_client import excerpt


class ParseError(ValueError):
    """The model's answer does not have the requested format."""


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_YES = {"1", "yes", "true", "y", "có", "co", "useful", "relevant", "supported"}
_NO = {"0", "no", "false", "n", "không", "khong", "not useful", "irrelevant", "unsupported"}


def _strip(text: str) -> str:
    text = _THINK.sub("", text or "")
    if "</think>" in text:  # an unterminated think block's end
        text = text.split("</think>")[-1]
    return text.strip()


def extract_json(text: str) -> Any:
    """The JSON value in a model's answer: bare, inside a code fence, or the first balanced {...}/[...]."""
    text = _strip(text)
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        for opener, closer in (("{", "}"), ("[", "]")):
            start = candidate.find(opener)
            while start != -1:
                depth, in_str, escape = 0, False, False
                for pos in range(start, len(candidate)):
                    ch = candidate[pos]
                    if in_str:
                        escape = ch == "\\" and not escape
                        if ch == '"' and not escape:
                            in_str = False
                        elif ch != "\\":
                            escape = False
                        continue
                    if ch == '"':
                        in_str = True
                    elif ch == opener:
                        depth += 1
                    elif ch == closer:
                        depth -= 1
                        if depth == 0:
                            try:
                                return json.loads(candidate[start:pos + 1])
                            except ValueError:
                                break
                start = candidate.find(opener, start + 1)
    raise ParseError(f"no JSON in {excerpt(text, 80)!r}")


def _as_flag(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower().strip(".!\"'") in _YES:
        return 1
    if isinstance(value, str) and value.strip().lower().strip(".!\"'") in _NO:
        return 0
    raise ParseError(f"not a 0/1 verdict: {value!r}")


def _json_or_none(body: str) -> Any:
    """The JSON value in a model's answer, or None when it holds none (the parsers then read plain text)."""
    try:
        return extract_json(body)
    except ParseError:
        return None


def parse_verdict(text: str) -> int:
    """A 0/1 verdict from JSON ({"verdict": 1}, {"verdict": "yes"}) or a bare "1"/"0"/"yes"/"no"."""
    body = _strip(text)
    value = _json_or_none(body)
    if isinstance(value, dict):
        for key in ("verdict", "useful", "relevant", "answer", "score", "label"):
            if key in value:
                return _as_flag(value[key])
        raise ParseError(f"no 'verdict' in {excerpt(body, 80)!r}")
    if isinstance(value, (int, bool, str)) and not isinstance(value, float):
        return _as_flag(value)
    match = re.search(r'"?verdict"?\s*[:=]\s*"?(\w+)', body, re.I)
    if match:
        return _as_flag(match.group(1))
    first = re.match(r"\W*(\w+)", body)
    if first and (first.group(1).lower() in _YES or first.group(1).lower() in _NO):
        rest = body[first.end():first.end() + 40].lower()
        if not re.search(r"\b(yes|no|0|1)\b", rest):  # "yes ... no" is ambiguous
            return _as_flag(first.group(1))
    raise ParseError(f"no verdict in {excerpt(body, 80)!r}")


def parse_index_list(text: str, n: int, keys: Sequence[str]) -> set[int]:
    """1-based item numbers in [1, n] from {"<key>": [..]}, a bare list, or "1, 3" / "none"."""
    body = _strip(text)
    value = _json_or_none(body)
    if isinstance(value, dict):
        found = next((value[k] for k in keys if k in value), None)
        if found is None:
            raise ParseError(f"none of {list(keys)} in {excerpt(body, 80)!r}")
        value = found
    if value is None:
        if re.fullmatch(r"(none|\[\s*\]|-|no|0)\.?", body.strip().lower()):
            return set()
        if not re.fullmatch(r"[\d\s,;.and]+", body.strip()):
            raise ParseError(f"no list of numbers in {excerpt(body, 80)!r}")
        value = re.findall(r"\d+", body)
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, list):
        raise ParseError(f"not a list: {excerpt(str(value), 80)!r}")
    return {_numbered(item, n, "number") for item in value}


def _numbered(item: Any, n: int, what: str) -> int:
    """A 1-based item number from a model's answer ("3", 3, "[3]", "3."), checked to be within 1..n."""
    try:
        number = int(str(item).strip().strip("[]()."))
    except ValueError:
        raise ParseError(f"not a {what}: {item!r}") from None
    if not 1 <= number <= n:
        raise ParseError(f"{what} {number} out of range 1..{n}")
    return number


def parse_string_list(text: str, key: str) -> list[str]:
    value = extract_json(text)
    if isinstance(value, dict):
        if key not in value:
            raise ParseError(f"no '{key}' in the answer")
        value = value[key]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ParseError(f"'{key}' is not a list of strings")
    return [str(v).strip() for v in value if str(v).strip()]


def parse_claims(text: str, fields: dict[str, str], n_contexts: int = 0) -> list[dict[str, Any]]:
    """{"claims": [{"claim": str, <field>: 0/1 | [context numbers]}]}; ``fields`` maps name -> "flag"|"indices"."""
    value = extract_json(text)
    if isinstance(value, dict):
        if "claims" not in value:
            raise ParseError("no 'claims' in the answer")
        value = value["claims"]
    if not isinstance(value, list):
        raise ParseError("'claims' is not a list")
    claims = []
    for item in value:
        if not isinstance(item, dict):
            raise ParseError(f"claim is not an object: {item!r}")
        claim: dict[str, Any] = {"claim": str(item.get("claim", item.get("statement", "")))}
        for name, kind in fields.items():
            if name not in item:
                raise ParseError(f"claim without '{name}'")
            if kind == "flag":
                claim[name] = _as_flag(item[name])
            else:
                raw = item[name]
                raw = [] if raw in (None, "", "none") else raw
                raw = raw if isinstance(raw, list) else [raw]
                claim[name] = sorted({_numbered(entry, n_contexts, "context number") for entry in raw})
        claims.append(claim)
    return claims


def parse_questions(text: str) -> tuple[list[str], int]:
    value = extract_json(text)
    if not isinstance(value, dict) or "questions" not in value:
        raise ParseError("no 'questions' in the answer")
    questions = value["questions"]
    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise ParseError("'questions' is not a list of strings")
    questions = [q.strip() for q in questions if q.strip()]
    noncommittal = _as_flag(value.get("noncommittal", 0))
    if not questions and not noncommittal:
        raise ParseError("no question generated")
    return questions, noncommittal
