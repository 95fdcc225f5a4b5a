"""Every command's --help shows examples that parse, and the root help lists commands in workflow order."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from typing import Any

import pytest
import typer

from edgemine.jobs.cli import COMMAND_ORDER, app, main

WORKFLOW = ["synth", "synth-sheet", "synth-fleet", "validate", "embed", "train-baseline", "fit-builtin", "mine",
            "similar", "evaluate", "serve", "reviewers", "review", "publish", "datasets", "submit", "jobs", "demo",
            "loop"]


def command_paths(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, cmd)] if path else []
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        out += command_paths(sub, (*path, name))
    return out


PATHS = command_paths(typer.main.get_command(app))


def test_the_root_help_lists_the_commands_in_workflow_order() -> None:
    out = subprocess.run([sys.executable, "-m", "edgemine", "--help"], capture_output=True, text=True, check=True)
    listed = re.findall(r"^│ ([a-z][a-z-]*) ", out.stdout, flags=re.M)
    assert listed == WORKFLOW == list(COMMAND_ORDER)
    assert sorted(p[0] for p, _ in PATHS if len(p) == 1) == sorted(WORKFLOW)  # none left out of the order


@pytest.mark.parametrize("path", [p for p, _ in PATHS], ids=lambda p: " ".join(p))
def test_every_help_has_examples_that_parse(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    text = capsys.readouterr().out
    assert "Examples" in text
    cmd = dict(PATHS)[path]
    lines = [x.strip() for x in (cmd.epilog or "").splitlines() if x.strip().startswith("edgemine ")]
    assert lines, f"{' '.join(path)}: no example command lines"
    for line in lines:  # every option an example names exists (an unknown one is a usage error, 2)
        args = shlex.split(line)[1:]
        assert main([*args, "--help"]) == 0, line
        capsys.readouterr()
