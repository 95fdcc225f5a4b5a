from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EDGEMINE = [sys.executable, "-m", "edgemine"]


def test_cli_import_is_light() -> None:
    """`edgemine --help` stays quick because importing the CLI loads no engine."""
    code = (
        "import sys, jobs.cli;"
        "mods = ('torch', 'ray', 'pyspark', 'faiss', 'deltalake', 'fastapi', 'pandas');"
        "heavy = [m for m in mods if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_the_commands() -> None:
    out = subprocess.run([*EDGEMINE, "--help"], capture_output=True, text=True, check=True)
    assert "synth" in out.stdout and "validate" in out.stdout


def test_errors_print_one_line_naming_the_value_and_exit_non_zero(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    out = subprocess.run([*EDGEMINE, "validate", str(missing)], capture_output=True, text=True)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in out.stderr


def test_usage_errors_print_one_line(tmp_path: Path) -> None:
    out = subprocess.run([*EDGEMINE, "synth", "--drives", "many", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--drives" in out.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = subprocess.run([*EDGEMINE, "--debug", "validate", str(tmp_path / "nope")], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_synth_then_validate_round_trip(tmp_path: Path) -> None:
    out = subprocess.run([*EDGEMINE, "synth", "--drives", "2", "--frames-per-drive", "30", "--rare-rate", "0.2",
                          "--size", "32", "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "wrote 60 frames in 2 drives" in out.stdout and "rare frames 12 (20.00%)" in out.stdout
    out = subprocess.run([*EDGEMINE, "validate", str(tmp_path / "manifest.parquet")],
                         capture_output=True, text=True, check=True)
    assert "60 frames, 2 drives" in out.stdout
