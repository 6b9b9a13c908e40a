"""Every stage command shown in the README parses with that script's own flags."""
from __future__ import annotations

import importlib
import re
import shlex

import pytest

from tests.conftest import REPO
from utils import cli


def readme_commands() -> list[list[str]]:
    """(script, *args) of each `python X.py ...` / `accelerate launch ... X.py ...` line."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())  # join continued lines
    commands = []
    for line in re.findall(r"^(?:python|accelerate launch) [^\n]+", text, re.M):
        tokens = shlex.split(line.split("#")[0])
        tokens = tokens[2:] if tokens[0] == "accelerate" else tokens[1:]
        while tokens and tokens[0].startswith("--"):  # accelerate's own flags
            tokens = tokens[2:]
        if tokens and tokens[0].endswith(".py"):
            commands.append(tokens)
    return commands


def test_readme_shows_the_two_commands_and_every_stage():
    text = (REPO / "README.md").read_text()
    assert "pip install -r requirements.txt && python run_pipeline.py" in text
    test_command = next(line for line in text.splitlines() if line.startswith("python -m pytest -q"))
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()  # CI runs the README's test command
    scripts = {c[0] for c in readme_commands()}
    assert {"download_data.py", "extract_targets_zeroscope.py", "extract_targets_blip.py", "train_mbm.py",
            "finetune_contrastive.py", "regress.py", "reconstruct_zeroscope.py", "evaluate.py"} <= scripts


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: " ".join(c)[:60])
def test_readme_command_parses(command, monkeypatch):
    monkeypatch.chdir(REPO)
    module = importlib.import_module(command[0].removesuffix(".py"))
    own = getattr(module, "parse_args", None)
    if own is not None and own.__module__ == module.__name__:
        own(command[1:])  # a script with its own checks on top of utils.cli.parse_args
    else:
        cli.parse_args(module.build_parser(), command[1:])
