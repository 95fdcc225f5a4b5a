from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.ray
def test_ctrl_c_during_a_mining_run_prints_one_line_and_exits_130(tmp_path: Path, synth_logs: Path,
                                                                   reference_logs: Path) -> None:
    import os
    import signal

    cmd = [*EDGEMINE, "mine", "--frames", str(synth_logs / "manifest.parquet"), "--reference",
           str(reference_logs / "manifest.parquet"), "--budget", "5", "--out", str(tmp_path / "run")]
    # a new session = a process group, as a terminal's Ctrl-C reaches every process of the foreground job
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("[aggregate]"):  # Spark is running: the case that printed py4j tracebacks
            time.sleep(1.0)
            os.killpg(p.pid, signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: interrupted; re-run the same command to resume"
    assert "Traceback" not in err and "py4j" not in err


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
def test_the_mining_cli_exits_0_every_time(tmp_path: Path, byo: dict[str, Path]) -> None:
    """Once in 14 runs `edgemine mine` printed "ok" and then died in interpreter teardown (SIGSEGV, 139); the
    entry point now stops the engines in order and leaves with os._exit, so a succeeded job reports 0."""
    codes = []
    for i in range(4):
        r = subprocess.run([*EDGEMINE, "mine", "--frames", str(byo["frames"]), "--reference", str(byo["reference"]),
                            "--budget", "8", "--out", str(tmp_path / f"run{i}")], capture_output=True, text=True,
                           timeout=300)
        codes.append(r.returncode)
        assert r.returncode == 0, r.stderr[-2000:]
        lines = r.stdout.strip().splitlines()
        assert any(x.startswith("ok: 8 candidates") for x in lines) and lines[-1].startswith("report: ")
        assert "Fatal Python error" not in r.stderr  # faulthandler would have printed the crash
    assert codes == [0, 0, 0, 0]


@pytest.mark.integration
@pytest.mark.spark
def test_starting_spark_keeps_the_callers_ctrl_c_handler() -> None:
    code = ("import signal\n"
            "def mine(s, f): pass\n"
            "signal.signal(signal.SIGINT, mine)\n"
            "from edgemine.mining.spark import get_spark\n"
            "get_spark('local[1]')\n"
            "print(signal.getsignal(signal.SIGINT) is mine)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]


def test_a_group_without_a_subcommand_prints_no_empty_error_line() -> None:
    out = subprocess.run([*EDGEMINE, "review"], capture_output=True, text=True, timeout=60)
    assert "error: \n" not in out.stderr + "\n" and not out.stderr.strip().endswith("error:")
