"""`edgemine datasets log|show|diff`: inspect a versioned edge-case training set."""

from __future__ import annotations

import json

import typer

from edgemine.jobs.commands import examples

datasets_app = typer.Typer(help="Inspect a versioned edge-case dataset (a Delta table).", no_args_is_help=True,
                            epilog=examples("edgemine datasets log data/edge_cases",
                                            "edgemine datasets show data/edge_cases@v3",
                                            "edgemine datasets diff data/edge_cases 2 3"))


def _echo(obj: object, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))


@datasets_app.command("log", epilog=examples("edgemine datasets log data/edge_cases",
                                                         "edgemine datasets log data/edge_cases --json"))
def log(path: str = typer.Argument(..., help="Dataset path (Delta table)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every version, newest first, with rows added and lineage."""
    from edgemine.jobs.datasets import dataset_log

    entries = dataset_log(path)
    if as_json:
        return _echo(entries, True)
    for e in entries:
        runs = e["lineage"].get("mining_runs", "")
        typer.echo(f"v{e['version']:<4} {e['timestamp']}  {e['operation']:<6} +{e['rows_added'] or 0:<6} "
                   f"runs={runs} code={e['lineage'].get('code_version', '?')}")


def _warn_duplicates(where: str, ids: list[str]) -> None:
    if ids:
        typer.echo(f"  WARNING: {where} has {len(ids)} frame_id(s) on more than one row, e.g. {ids[:5]}", err=True)


@datasets_app.command("show", epilog=examples("edgemine datasets show data/edge_cases",
                                                          "edgemine datasets show data/edge_cases@v3"))
def show(ref: str = typer.Argument(..., help="Dataset path, optionally pinned: PATH@vN."),
         version: int = typer.Option(None, "--version", help="Version to show (default: latest)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Rows, splits, categories, schema and lineage of one version."""
    from edgemine.jobs.datasets import dataset_show

    info = dataset_show(ref, version=version)
    if as_json:
        return _echo(info, True)
    typer.echo(f"{info['dataset']}@v{info['version']}: {info['rows']} rows from {info['drives']} drives")
    _warn_duplicates(f"v{info['version']}", info["duplicate_frame_ids"])
    typer.echo("  splits:     " + ", ".join(f"{k}={v}" for k, v in sorted(info["splits"].items())))
    typer.echo("  categories: " + ", ".join(f"{k}={v}" for k, v in sorted(info["categories"].items())))
    typer.echo("  columns:    " + ", ".join(info["schema"]))
    for k, v in info["lineage"].items():
        typer.echo(f"  {k}: {json.dumps(v, default=str) if not isinstance(v, str) else v}")


@datasets_app.command("diff", epilog=examples("edgemine datasets diff data/edge_cases 2 3"))
def diff(path: str = typer.Argument(..., help="Dataset path."),
         a: int = typer.Argument(..., help="From version."),
         b: int = typer.Argument(..., help="To version."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Rows added/removed/relabelled and columns added between two versions."""
    from edgemine.jobs.datasets import dataset_diff

    d = dataset_diff(path, a, b)
    if as_json:
        return _echo(d, True)
    typer.echo(f"v{a} -> v{b}: +{d['rows_added']} rows, -{d['rows_removed']} rows, {d['relabeled']} relabelled "
               f"({d['rows']['from']} -> {d['rows']['to']} rows)")
    _warn_duplicates(f"v{a}", d["duplicate_frame_ids"]["from"])
    _warn_duplicates(f"v{b}", d["duplicate_frame_ids"]["to"])
    if d["added_by_category"]:
        typer.echo("  added: " + ", ".join(f"{k}={v}" for k, v in d["added_by_category"].items()))
    if d["columns_added"] or d["columns_removed"]:
        typer.echo(f"  columns added: {d['columns_added']}  removed: {d['columns_removed']}")


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
