"""What `edgemine mine` tells: its own lines on the terminal, the engines' (Ray, Spark) in RUN/engine.log."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgemine.runtime import engine_log, engine_log_path

# lines Ray and Spark print on their own; none may reach a run's terminal
ENGINE_CHATTER = re.compile(r"core_worker\.cc|Progress bars disabled|Using incubator modules|Setting default log level"
                            r"|sc\.setLogLevel|log4j|py4j|WARN [A-Z][a-zA-Z]+:|\bINFO\b|raylet|gcs_server")


def test_engine_log_takes_fd2_and_the_engine_loggers_while_ours_reach_the_terminal(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run" / "engine.log"
    with engine_log(log) as path:
        assert engine_log_path() == path == log.resolve()
        os.write(2, b"native engine line\n")  # what the JVM or Ray's C++ core worker do
        logging.getLogger("ray.data").warning("ray data chatter")
        logging.getLogger("py4j.clientserver").error("gateway chatter")
        print("our progress line", file=sys.stderr)
    assert engine_log_path() is None
    err = capfd.readouterr().err
    assert "our progress line" in err and "native" not in err and "chatter" not in err
    text = log.read_text()
    assert "native engine line" in text and "ray data chatter" in text and "gateway chatter" in text
    os.write(2, b"after\n")  # fd 2 is the terminal again
    assert "after" in capfd.readouterr().err and "after" not in log.read_text()
    assert "RAY_DATA_LOGGING_CONFIG" not in os.environ


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
def test_mine_prints_stages_and_a_summary_naming_the_report_and_no_engine_lines(
        tmp_path: Path, byo: dict[str, Path]) -> None:
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edgemine", "mine", "--frames", str(byo["frames"]), "--reference",
                        str(byo["reference"]), "--budget", "8", "--out", str(run), "--spark-master", "local[1]"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    lines = r.stdout.strip().splitlines()
    assert not [x for x in lines if ENGINE_CHATTER.search(x)], r.stdout
    assert lines[-1] == f"report: {run / 'report.html'}" and (run / "report.html").exists()
    for stage in ("frames", "score", "aggregate", "select", "report"):
        assert f"[{stage}]" in lines and any(re.fullmatch(rf"  {stage} done in \d+\.\ds", x) for x in lines)
    assert any(x.startswith("ok: 8 candidates") for x in lines)
    log = run / "engine.log"
    if log.exists() and log.stat().st_size:  # the JVM launcher's and log4j's lines, where this Java prints any
        assert f"  engine log (Ray, Spark): {log}" in lines
