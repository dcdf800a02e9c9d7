"""A real headless browser for the tests: Debian's Chromium driven by Playwright's Python API (no browser download).

CI installs Chromium with apt (.ci/run); on a machine without it the browser tests are skipped, except under CI,
where they fail: a page test that silently skips is no test.

Also a command, to take the README's screenshot with the same browser:

    python tests/browser.py outputs/eval/results.html docs/results_html.png [--open-query N] [--max-height PX]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Root (CI, containers) needs --no-sandbox.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
_EVALUATIONS: dict[tuple, Path] = {}


def chromium_path() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def require_browser() -> str:
    """Chromium's path, or skip (fail under CI) when Chromium or Playwright is missing."""
    import pytest

    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = "needs Chromium (apt-get install chromium) and Playwright (pip install -r requirements-dev.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def launched(executable: str | None = None) -> Iterator["object"]:
    """A headless Chromium (Playwright ``Browser``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable or chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def record_requests(page, allowed_prefix: str) -> list[str]:
    """Every request the page makes, in order; any outside ``allowed_prefix`` is recorded and aborted."""
    seen: list[str] = []

    def handle(route) -> None:
        url = route.request.url
        seen.append(url)
        if url.startswith(allowed_prefix):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", handle)
    return seen


# The browser tests' test set: six sample queries and three that no system should find (their words are in no
# passage; labels outside BM25's all-ties top 5), so that "every system misses" has something to show whatever the
# tiny random model ranks.
NONSENSE = {"Zyqvox thrumble kexiwat plonzo?": "1", "Quorvex blandith ozymaq?": "36", "Wexilor ptungra vomblix?": "50"}

def small_evaluation(tmp_path_factory, embedding_model: Path, generator: tuple[Path, Path]) -> Path:
    """evaluate_rag.py (in process) with BM25, ``embedding_model`` and its hybrids, and a tiny local generator
    answering from every system's top 5, on six sample queries and the :data:`NONSENSE` ones
    (``<folder>/../test.csv``):
    made once per session, shared by the browser tests."""
    key = (str(embedding_model), str(generator[0]))
    if key not in _EVALUATIONS:
        import pandas as pd

        import evaluate_rag
        from ragtune.core.data import SAMPLE_TEST

        base = tmp_path_factory.mktemp("browser-eval")
        rows = pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig").head(6)
        nonsense = [rows.iloc[:1].assign(**{"Query": text, "Ground truth document": label})
                    for text, label in NONSENSE.items()]
        pd.concat([rows, *nonsense]).to_csv(base / "test.csv", index=False)
        folder, adapter = generator
        code = evaluate_rag.main(["--test_data", str(base / "test.csv"), "--embedding_models", str(embedding_model),
                                  "--k", "3", "5", "--generator_local", str(folder), "--generator_adapter",
                                  str(adapter), "--generator_max_new_tokens", "6", "--answer_systems", "*",
                                  "--output_dir", str(base / "eval")])
        assert code == 0
        _EVALUATIONS[key] = base / "eval"
    return _EVALUATIONS[key]


def screenshot(html: Path, png: Path, open_query: int | None = 0, width: int = 1100,
               max_height: int | None = None) -> Path:
    """A full-page screenshot of ``html`` (one query's drill-down open), as the tests see the page; its top
    ``max_height`` pixels when given."""
    with launched() as browser:
        page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
        page.goto(Path(html).resolve().as_uri())
        if open_query is not None:
            page.locator("details.query").nth(open_query).locator("summary").click()
        png.parent.mkdir(parents=True, exist_ok=True)
        height = page.evaluate("document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, max_height or height)}
        page.screenshot(path=str(png), full_page=True, clip=clip)
    return png


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--open-query", type=int, default=0, help="Index of the query whose drill-down is open.")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--max-height", type=int, default=None, help="Keep the top of the page only.")
    options = parser.parse_args()
    if chromium_path() is None:
        sys.exit("no Chromium found: apt-get install chromium")
    print(screenshot(options.html, options.png, options.open_query, options.width, options.max_height))
