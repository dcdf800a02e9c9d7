"""Time the data audit on a synthetic Vietnamese-like corpus (default 100k passages).

    python benchmarks/bench_audit.py [--passages 100000] [--train 10000] [--test 2000]

Passages are 60-160 random Vietnamese syllables with numbers (years, prices, dates, counts), ~1% planted
personal values, 0.5% exact and 0.5% near-duplicate copies; queries are short syllable strings with
~2% near-copies between train and test. Prints wall and CPU seconds per stage (BLAS/OpenMP pinned to one
thread, so CPU seconds are one core's work even on a busy machine) and what each stage found.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragtune.audit import find_duplicate_passages, find_leakage, near_duplicate_queries, run_audit, scan_pii  # noqa: E402
from ragtune.core.data import Corpus, LabelledQuery  # noqa: E402

ONSETS = ["", "b", "c", "ch", "d", "đ", "g", "gi", "h", "k", "kh", "l", "m", "n", "ng", "nh", "ph", "qu", "r", "s",
          "t", "th", "tr", "v", "x"]
RHYMES = ["a", "á", "à", "ả", "ã", "ạ", "ai", "an", "ang", "anh", "ao", "âm", "ân", "ất", "ây", "e", "ê", "em", "ên",
          "i", "inh", "ít", "o", "ô", "ơ", "oi", "ông", "ốt", "ời", "u", "ư", "ưa", "ương", "ước", "uy", "iệt", "iểu",
          "ọc", "ộng", "ững", "ết", "ình", "ượng", "ục"]
FILLERS = ["năm 2023", "khóa 2019-2020", "giá 1.500.000 đồng", "ngày 12/03/2024", "có 150 thành viên",
           "mã 123456789012", "phòng 302", "lúc 8h30", "STT 4521"]
PII = ["SĐT 0912 345 {:03d}", "email user{}@gmail.com", "CCCD 0012030{:05d}", "STK 190345678{:04d}",
       "MSSV B21DCCN{:03d}", "sinh ngày 12/03/20{:02d}"]
PLANTED_RE = re.compile(r"SĐT 0912 345 \d{3}|email user\d+@gmail\.com|CCCD 0012030\d{5}|STK 190345678\d{4}"
                        r"|MSSV B21DCCN\d{3}|sinh ngày 12/03/20\d\d", re.IGNORECASE)


def make_data(n_passages: int, n_train: int, n_test: int, seed: int = 0):
    rng = random.Random(seed)
    syllables = [o + r for o in ONSETS for r in RHYMES]
    texts = []
    for i in range(n_passages):
        words = rng.choices(syllables, k=rng.randint(60, 160))
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(FILLERS))
        if rng.random() < 0.01:
            words.insert(rng.randrange(len(words)), rng.choice(PII).format(i % 1000 if i % 1000 < 100 else i % 100))
        texts.append(" ".join(words))
    n_dup = n_passages // 200
    for k in range(n_dup):  # exact copies (case changed) and near copies (two words changed)
        src = rng.randrange(n_passages)
        texts[rng.randrange(n_passages)] = texts[src].upper()
        words = texts[rng.randrange(n_passages)].split()
        near = texts[src].split()
        for _ in range(2):
            near[rng.randrange(len(near))] = rng.choice(syllables)
        texts[rng.randrange(n_passages)] = " ".join(near)
    corpus = Corpus(ids=[str(i) for i in range(n_passages)], texts=texts, source="synthetic")
    # Planted values as they stand after the copying (a copied passage carries its value along).
    planted_pii = sum(len(PLANTED_RE.findall(text)) for text in texts)

    def query(row: int) -> LabelledQuery:
        return LabelledQuery(query=" ".join(rng.choices(syllables, k=rng.randint(6, 16))) + " ?",
                             relevant_ids=[str(rng.randrange(n_passages))], row=row)

    train = [query(i + 2) for i in range(n_train)]
    test = [query(i + 2) for i in range(n_test)]
    for j in range(0, n_test, 50):  # 2% leaked: reordered, accents stripped
        words = train[j].query.rstrip(" ?").split()
        rng.shuffle(words)
        test[j] = LabelledQuery(query=" ".join(words), relevant_ids=train[j].relevant_ids, row=test[j].row)
    return corpus, train, test, planted_pii


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    started = time.perf_counter()
    corpus, train, test, planted = make_data(args.passages, args.train, args.test)
    rows = [("build synthetic data", time.perf_counter() - started, time.process_time(), "")]

    def timed(name, fn, note):
        t, c = time.perf_counter(), time.process_time()
        value = fn()
        rows.append((name, time.perf_counter() - t, time.process_time() - c, note(value)))
        return value

    timed("PII scan (warn)", lambda: scan_pii(corpus, {"train": train, "test": test})[0],
          lambda f: f"{len(f)} found, {planted} planted")
    timed("PII scan + redact", lambda: scan_pii(corpus, {"train": train, "test": test}, redact=True)[0],
          lambda f: f"{len(f)} redacted")
    timed("leakage train x test", lambda: find_leakage(train, test), lambda p: f"{len(p)} pairs")
    timed("near-dups inside train", lambda: near_duplicate_queries(train), lambda p: f"{len(p)} pairs")
    timed("duplicate passages", lambda: find_duplicate_passages(corpus),
          lambda g: f"{len(g)} groups, {sum(len(x.ids) for x in g)} passages")
    timed("run_audit (all, warn)", lambda: run_audit(corpus, train, test, policy="warn"),
          lambda r: f"{len(r.pii_findings)} PII, {len(r.leaked_test_indices)} leaked")

    print(f"\nData audit, {args.passages:,} passages, {args.train:,} train + {args.test:,} test queries, one core\n")
    print(f"| {'stage':<26} | {'wall s':>7} | {'CPU s':>7} | result")
    print(f"|{'-' * 28}|{'-' * 9}|{'-' * 9}|{'-' * 40}")
    for name, seconds, cpu, note in rows:
        print(f"| {name:<26} | {seconds:>7.2f} | {cpu:>7.2f} | {note}")


if __name__ == "__main__":
    main()
