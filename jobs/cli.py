"""The `edgemine` command line.

Each capability registers its subcommands from one small module in `jobs/commands/`. Those modules import
nothing heavy at module level (torch, ray, pyspark load inside the command), so `edgemine --help` is quick.
Expected failures (`EdgemineError`) and usage errors print one line and exit non-zero; `--debug` shows the
traceback instead. Ctrl-C prints one line and exits 130 (`INTERRUPTED`), with Spark and Ray stopped quietly.

`run` is the process entry point (the `edgemine` script, `python -m edgemine`): faulthandler on, then the
command, then the engines stopped in a fixed order (Spark, then Ray), the atexit handlers run, output flushed,
and the process ends with `os._exit` - native libraries' threads (JVM gateway, Ray, FAISS/OpenMP, torch) are
never left to interpreter teardown, where one of them once crashed a run that had succeeded (exit 139 after "ok").
`main` is the same without the process-level parts, for tests that call it in-process.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

# One module per capability; each defines `register(app)`. Listed in the order of the work.
COMMAND_MODULES = (
    "edgemine.jobs.commands.synth",
    "edgemine.jobs.commands.manifest",
    "edgemine.jobs.commands.embed",
    "edgemine.jobs.commands.mine",
    "edgemine.jobs.commands.review",
    "edgemine.jobs.commands.publish",
    "edgemine.jobs.commands.datasets",
    "edgemine.jobs.commands.submit",
    "edgemine.jobs.commands.demo",
)
# `edgemine --help` lists the commands in the order a user meets them (typer would put groups last);
# a command missing here is listed after these.
COMMAND_ORDER = ("synth", "synth-sheet", "synth-fleet", "validate", "embed", "train-baseline", "fit-builtin",
                 "mine", "similar", "evaluate", "serve", "reviewers", "review", "publish", "datasets", "submit",
                 "jobs", "demo", "loop")


class _WorkflowOrder(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


app = typer.Typer(
    name="edgemine",
    help="Edge-case mining for driving data: embed, score, aggregate, select, review, publish.",
    cls=_WorkflowOrder,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["EDGEMINE_DEBUG"] = "1"


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


INTERRUPTED = "interrupted; re-run the same command to resume"


def _child_jvms() -> list[int]:
    """PIDs of this process's child processes that are Spark JVMs (Linux /proc; empty elsewhere)."""
    found = []
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry.name}/stat").read_bytes()
                ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
                if ppid == me and b"org.apache.spark" in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def stop_engines(*, quiet: bool = False) -> None:
    """Stop the Spark and Ray this process started, in that order; `quiet` also silences their goodbyes."""
    if "pyspark" not in sys.modules and "ray" not in sys.modules:
        return
    for name in ("py4j", "py4j.clientserver", "py4j.java_gateway", "pyspark", "ray"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # quiet: the JVM and Ray's workers write to our stderr directly while they go down
    with _stderr_silenced() if quiet else contextlib.nullcontext():
        if "pyspark" in sys.modules:
            with contextlib.suppress(Exception):
                from pyspark import SparkContext

                if SparkContext._active_spark_context is not None:
                    SparkContext._active_spark_context.stop()
            # The gateway JVM exits on EOF of its stdin, through shutdown hooks that can wait a long time
            # after an interrupted job; the Spark application is stopped by now, so end the process.
            from edgemine.mining.spark import gateway_processes

            for proc in gateway_processes():
                if proc.poll() is None:
                    with contextlib.suppress(Exception):
                        proc.kill()
                        proc.wait(timeout=10)
            for pid in _child_jvms():  # a JVM still starting when Ctrl-C came is in no handle yet
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        if "ray" in sys.modules:
            with contextlib.suppress(Exception):
                import ray

                if ray.is_initialized():
                    ray.shutdown()


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("EDGEMINE_DEBUG") == "1"


def _kind(exc: BaseException) -> str:
    """Classify click/typer control-flow exceptions by class name: typer >= 0.20 vendors its own click."""
    names = {c.__name__ for c in type(exc).__mro__}
    for kind in ("Exit", "Abort", "UsageError", "ClickException"):
        if kind in names:
            return kind
    return ""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning expected errors into one line on stderr."""
    from edgemine.errors import EdgemineError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        result = app(args=args, prog_name="edgemine", standalone_mode=False)
    except EdgemineError as exc:
        if debug:
            raise
        print(f"error: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:  # click/typer control flow, then the last resort: still one line
        kind = _kind(exc)
        if kind == "Exit":
            code = int(getattr(exc, "exit_code", 0) or 0)
            return _interrupted() if code == 130 else code
        if kind == "Abort":  # click's name for a Ctrl-C inside a prompt
            return _interrupted()
        if debug:
            raise
        if kind in ("UsageError", "ClickException"):
            message = exc.format_message()  # type: ignore[attr-defined]
            if message:  # empty when a group without a subcommand printed its help
                print(f"error: {message}".replace("\n", " "), file=sys.stderr)
            return int(getattr(exc, "exit_code", 2))
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"error: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    # typer turns a Ctrl-C inside a command into Exit(130), which click returns as the result here
    if result == 130:
        return _interrupted()
    return result if isinstance(result, int) else 0


def _interrupted() -> int:
    print(f"error: {INTERRUPTED}", file=sys.stderr, flush=True)
    stop_engines(quiet=True)
    return 130


def _on_sigint(signum: int, frame: object) -> None:
    """First Ctrl-C: silence the libraries' own logging of it (py4j logs a traceback per pending call), ignore
    further Ctrl-Cs so the cleanup finishes, and interrupt the command."""
    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block - but a native crash's traceback (faulthandler) still
    reaches the terminal, since that is the crash this entry point exists to catch."""
    saved = terminal = None
    with contextlib.suppress(OSError):
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        terminal = os.fdopen(os.dup(saved), "w")
        faulthandler.enable(file=terminal)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        if terminal is not None:
            faulthandler.enable()
            with contextlib.suppress(Exception):
                terminal.close()


def run() -> None:
    """The process entry point: main(), then engines stopped and output flushed, then os._exit (see above)."""
    faulthandler.enable()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        code = main()
    except SystemExit as exc:  # main returns its codes; a library may still sys.exit
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being handled
        code = 130
    except BaseException:  # --debug re-raises: show it, then still go down in order
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        # the command has said all it had to; what the engines say going down (py4j logging a lost connection
        # as the gateway JVM ends) is noise after a summary line
        with _stderr_silenced():
            stop_engines()
            # what normal interpreter exit would run: pyspark's kill of its JVM, Ray's shutdown, tempfile's
            # cleanups... - everything but module teardown, where native threads crash
            atexit._run_exitfuncs()
    except KeyboardInterrupt:
        code = 130
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
