"""The `edgemine` command line.

Each capability registers its subcommands from one small module in `jobs/commands/`. Those modules import
nothing heavy at module level (torch, ray, pyspark load inside the command), so `edgemine --help` is quick.
Expected failures (`EdgemineError`) and usage errors print one line and exit non-zero; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

# One module per capability; each defines `register(app)`.
COMMAND_MODULES = (
    "edgemine.jobs.commands.synth",
    "edgemine.jobs.commands.manifest",
    "edgemine.jobs.commands.demo",
    "edgemine.jobs.commands.datasets",
    "edgemine.jobs.commands.publish",
    "edgemine.jobs.commands.submit",
    "edgemine.jobs.commands.mine",
    "edgemine.jobs.commands.review",
    "edgemine.jobs.commands.embed",
)

app = typer.Typer(
    name="edgemine",
    help="Edge-case mining for driving data: embed, score, aggregate, select, review, publish.",
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
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click/typer control flow, then the last resort: still one line
        kind = _kind(exc)
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0) or 0)
        if kind == "Abort":
            print("error: aborted", file=sys.stderr)
            return 130
        if debug:
            raise
        if kind in ("UsageError", "ClickException"):
            print(f"error: {exc.format_message()}".replace("\n", " "), file=sys.stderr)  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"error: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
