"""The commands users copy: every command of the README's code blocks and of the Colab notebook parses with the
flags the scripts really have (a renamed or removed flag breaks this test, not a user's run)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {"fine_tune_bge_m3.py": "fine_tune_bge_m3", "fine_tune_reranker.py": "fine_tune_reranker",
           "fine_tune_generator.py": "fine_tune_generator", "evaluate_rag.py": "evaluate_rag",
           "predict_rag.py": "predict_rag", "-m ragtune.split": "ragtune.split", "-m ragtune.audit": "ragtune.audit.__main__",
           "-m ragtune.app": "ragtune.app"}


def readme_commands() -> list[str]:
    """Each `python ...` command of the README's bash blocks, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"^(\w+=\S+ )+", "", command.split(" #")[0].strip())  # FOO=1 python ...
            if command.startswith("python ") and "pytest" not in command:
                commands.append(command)
    return commands


def notebook_commands() -> list[str]:
    notebook = json.loads((REPO / "notebooks" / "neorag_t4.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    lines = [line.strip() for cell in notebook["cells"] if cell["cell_type"] == "code"
             for line in "".join(cell["source"]).splitlines()]
    return [line[1:] for line in lines if line.startswith("!python ")]


def chain_folders() -> set[str]:
    """The folders the chain's scripts create by default, from the scripts' own defaults: each training script's
    outputs/<default base model>-<its suffix>, and evaluate_rag.py's --output_dir."""
    from ragtune.train.arguments import default_output_dir
    from ragtune.train.embedder import arguments as embedder
    from ragtune.train.generator import arguments as generator
    from ragtune.train.reranker import arguments as reranker

    folders = {load("evaluate_rag.py").build_parser().get_default("output_dir")}
    for script, kind in (("fine_tune_bge_m3.py", embedder), ("fine_tune_reranker.py", reranker),
                         ("fine_tune_generator.py", generator)):
        base_model = load(script).build_parser().get_default("base_model")
        folders.add(default_output_dir(base_model, kind.OUTPUT_SUFFIX))
    return folders


def load(key: str):
    """The module of a script (``fine_tune_bge_m3.py``, ``-m ragtune.split``...)."""
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module(SCRIPTS[key])
    finally:
        sys.path.remove(str(REPO))


def parse(command: str) -> None:
    words = shlex.split(command.replace("{DATA}", "/data").replace('"$MINILM"', "/models/minilm"))
    assert words[0] == "python", command
    key = " ".join(words[1:3]) if words[1] == "-m" else words[1]
    assert key in SCRIPTS, f"unknown script in {command!r}"
    module = load(key)
    args = words[3:] if words[1] == "-m" else words[2:]
    try:
        module.build_parser().parse_args(args)
    except SystemExit as exit_:
        pytest.fail(f"{command!r} does not parse (exit {exit_.code})")


def test_the_readme_and_the_notebook_hold_the_chain():
    readme, notebook = readme_commands(), notebook_commands()
    for step in ("-m ragtune.split", "fine_tune_bge_m3.py", "fine_tune_reranker.py", "fine_tune_generator.py",
                 "evaluate_rag.py", "predict_rag.py"):
        assert any(step in c for c in readme), step
        assert any(step in c for c in notebook), step


def test_the_folders_the_readme_and_the_notebook_name_are_the_ones_the_scripts_create():
    """A folder a command reads (--embedding_model outputs/...) is one a script creates by default, or one an
    earlier command named with --output_dir or --output."""
    notebook = json.loads((REPO / "notebooks" / "neorag_t4.ipynb").read_text(encoding="utf-8"))
    texts = {"README.md": (REPO / "README.md").read_text(encoding="utf-8"),
             "the notebook": "".join("".join(cell["source"]) for cell in notebook["cells"])}
    created = chain_folders()
    assert created == {"outputs/bge-m3-finetuned", "outputs/bge-reranker-v2-m3-reranker",
                       "outputs/Qwen2.5-1.5B-Instruct-generator", "outputs/eval"}  # the names the README shows
    for where, text in texts.items():
        named = set(re.findall(r"--output(?:_dir)?\s+(outputs/[\w.-]+)", text))
        for folder in re.findall(r"outputs/[\w.-]+", text):
            assert folder in created | named, f"{where} names {folder}, a path no command creates"


@pytest.mark.parametrize("command", readme_commands() + notebook_commands())
def test_every_documented_command_parses(command):
    parse(command)


def help_examples(script: str) -> list[str]:
    """The example commands at the top of a script's --help, continuation lines joined."""
    text = load(script).build_parser().format_help()
    assert not re.search(r"\S {5,}--", text), f"{script} --help joins its example's lines into one"
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip().startswith("python ")]


@pytest.mark.parametrize("script", ["fine_tune_bge_m3.py", "fine_tune_reranker.py", "fine_tune_generator.py",
                                    "evaluate_rag.py", "predict_rag.py"])
def test_the_example_in_each_scripts_help_parses_and_names_the_folders_the_chain_creates(script):
    examples = help_examples(script)
    assert examples, f"{script} --help shows no example"
    for command in examples:
        parse(command)
        for folder in re.findall(r"outputs/[\w.-]+", command):
            assert folder in chain_folders(), f"{script} --help names {folder}, a folder no script creates by default"
