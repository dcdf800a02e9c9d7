"""python -m ragtune.app in a real headless Chromium: the page lists the evaluation's systems, a typed question gets
the evaluated system's passages (with each stage's score) and its answer, the switch changes the system, nothing
is fetched from outside the app; bad flags are one line and exit 2."""

from __future__ import annotations

import contextlib
import csv
import json
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from browser import launched, record_requests, require_browser, small_evaluation
from conftest import REPO, assert_one_clear_error
from planted_pii import PLANTED, assert_nothing_leaks

from ragtune.core.data import SAMPLE_CORPUS, load_corpus, load_queries

STARTUP_SECONDS = 240


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_browser()


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, tiny_st, tiny_gpt2) -> Path:
    return small_evaluation(tmp_path_factory, tiny_st, tiny_gpt2)  # the results.html tests' evaluation


@contextlib.contextmanager
def running_app(*flags: str) -> Iterator[str]:
    """``python -m ragtune.app FLAGS`` on a free port (--port 0: the OS picks one, the app logs the address):
    its URL once it serves; stopped afterwards."""
    process = subprocess.Popen([sys.executable, "-m", "ragtune.app", *flags, "--port", "0"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + STARTUP_SECONDS, []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("the app did not start:\n" + "".join(seen[-30:]))
            seen.append(line)
            found = re.search(r"Serving .* on (http://127\.0\.0\.1:\d+/)", line)
            if found:
                break
            if process.poll() is not None and lines.empty():
                pytest.fail("the app exited:\n" + "".join(seen[-30:]))
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(evaluation):
    with running_app("--from", str(evaluation)) as url:
        yield url


def evaluated(folder: Path, system: str, row: str) -> tuple[list[str], str]:
    """The ids ``system`` retrieved for the test query at ``row`` (top 5) and the answer it was evaluated with."""
    with open(folder / "per_query.csv", encoding="utf-8-sig", newline="") as handle:
        record = next(r for r in csv.DictReader(handle) if r["row"] == row)
    answers = pd.read_csv(folder / "answers.csv", encoding="utf-8-sig", dtype=str).fillna("")
    answer = answers[(answers.system == system) & (answers.row == row)].answer.iloc[0]
    return record[f"{system} | retrieved_ids"].split()[:5], answer


def ask(page, question: str, system: str) -> None:
    page.select_option("#system", label=system)
    page.fill("#question", question)
    page.click("#submit")
    page.wait_for_function("document.querySelector('#meta').textContent.startsWith(" + json.dumps(system) + ")")


def test_ask_a_question_and_switch_systems(chromium, app_url, evaluation):
    systems = json.loads((evaluation / "systems.json").read_text())
    query = load_queries(evaluation.parent / "test.csv", load_corpus(SAMPLE_CORPUS), flag="--test_data")[2]
    with launched(chromium) as browser:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        requests = record_requests(page, app_url)
        page.goto(app_url)
        page.wait_for_function("document.querySelectorAll('#system option').length > 0")
        assert page.locator("#system option").all_inner_texts() == [s["name"] for s in systems["systems"]]
        assert page.locator("#system").input_value() == systems["best"]
        for system in (systems["best"], "bm25"):
            ask(page, query.query, system)
            ids, answer = evaluated(evaluation, system, str(query.row))
            items = page.locator("#passages li")
            assert items.evaluate_all("ls => ls.map(l => l.dataset.pid)") == ids, system
            corpus = load_corpus(SAMPLE_CORPUS)
            assert items.locator(".text").all_inner_texts() == [corpus.text(pid) for pid in ids]
            stages = set(items.first.locator(".stage").all_inner_texts()[i].split()[0]
                         for i in range(items.first.locator(".stage").count()))
            assert stages == ({"bm25"} if system == "bm25" else {"bm25", "dense", "hybrid"}), stages
            assert page.locator("#answer").inner_text().strip() == answer.strip()  # as evaluated: same prompt
        assert all(url.startswith(app_url) for url in requests) and len(requests) >= 4, requests


@pytest.mark.parametrize("flags, message", [
    (["--from", "no/such/eval"], "--from no/such/eval: no such folder"),
    (["--from", ".", "--embedding_model", "x"], "drop --embedding_model"),
    (["--port", "70000"], "--port must be in 0..65535"),
])
def test_bad_flags_exit_2_with_one_line(flags, message):
    result = subprocess.run([sys.executable, "-m", "ragtune.app", *flags], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert_one_clear_error(result, message)


def test_a_port_in_use_is_one_line_before_anything_is_loaded_or_written(tmp_path):
    """The port is taken before the models load (minutes for a real model): the user hears it at once, and the
    cache folder a loaded model would fill is never created."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cache = tmp_path / "cache"
        result = subprocess.run([sys.executable, "-m", "ragtune.app", "--first_stage", "bm25", "--no_generator",
                                 "--port", str(port), "--cache_dir", str(cache)], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
    assert_one_clear_error(result, f"--host 127.0.0.1 --port {port}: cannot listen there", out=cache)


@pytest.mark.parametrize("pii", ["warn", "off"])
def test_the_page_masks_personal_values_unless_told_not_to(pii, tmp_path):
    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"id": range(1, len(PLANTED) + 1), "text": [s for s, _, _ in PLANTED]}).to_csv(corpus, index=False)
    with running_app("--corpus", str(corpus), "--first_stage", "bm25", "--no_generator", "--pii", pii) as url:
        request = urllib.request.Request(url + "api/ask", data=json.dumps(
            {"question": "số điện thoại email tài khoản", "k": len(PLANTED)}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            page_text = json.dumps(json.load(response), ensure_ascii=False)
    if pii == "warn":
        assert_nothing_leaks(page_text)
    else:
        assert PLANTED[0][2] in page_text
