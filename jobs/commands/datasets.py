"""`edgemine datasets log|show|diff|classes`: inspect a versioned edge-case training set.

Every command takes one reference syntax, `PATH@vN` (`PATH` alone: the latest version). Output is
deterministic: keys sorted, lists sorted, columns in table order.
"""

from __future__ import annotations

import json
import re

import typer

from edgemine.jobs.commands import examples

datasets_app = typer.Typer(help="Inspect a versioned edge-case dataset (a Delta table); versions are PATH@vN.",
                           no_args_is_help=True,
                           epilog=examples("edgemine datasets log data/edge_cases",
                                           "edgemine datasets show data/edge_cases@v3",
                                           "edgemine datasets diff data/edge_cases@v2 data/edge_cases@v3",
                                           "edgemine datasets classes data/edge_cases@v3"))


StorageOption = typer.Option(
    [], "--storage-option", metavar="KEY=VALUE",
    help="deltalake storage option for a dataset on an object store (repeat), e.g. AWS_REGION=eu-west-1; "
         "without any, deltalake reads its environment (AWS_*, GOOGLE_*, AZURE_*).")


def _options(values: list[str]) -> dict[str, str] | None:
    from edgemine.jobs.datasets import parse_storage_options

    return parse_storage_options(values)


def _echo(obj: object, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


@datasets_app.command("log", epilog=examples("edgemine datasets log data/edge_cases",
                                             "edgemine datasets log data/edge_cases@v3 --json"))
def log(ref: str = typer.Argument(..., help="Dataset path; PATH@vN: the history up to vN."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        storage_option: list[str] = StorageOption) -> None:
    """Every version, newest first, with rows added, classes added and lineage."""
    from edgemine.jobs.datasets import dataset_log

    entries = dataset_log(ref, storage_options=_options(storage_option))
    if as_json:
        return _echo(entries, True)
    typer.echo(f"{'version':<7} {'committed':<25}  {'operation':<9} {'rows':<7} lineage (runs, code, classes added)")
    for e in entries:
        lin = e["lineage"]
        runs = lin.get("mining_runs", "")
        added = lin.get("edgemine.classes_added") or []
        typer.echo(f"{'v' + str(e['version']):<7} {e['timestamp']:<25}  {e['operation']:<9} "
                   f"{'+' + str(e['rows_added'] or 0):<7} runs={_value(runs)} code={lin.get('code_version', '?')}"
                   + (f" classes+={_value(added)}" if added else ""))


def _warn_duplicates(where: str, ids: list[str]) -> None:
    if ids:
        typer.echo(f"  WARNING: {where} has {len(ids)} frame_id(s) on more than one row, e.g. {ids[:5]}", err=True)


@datasets_app.command("show", epilog=examples("edgemine datasets show data/edge_cases",
                                              "edgemine datasets show data/edge_cases@v3 --json"))
def show(ref: str = typer.Argument(..., help="Dataset path, optionally pinned: PATH@vN."),
         version: int = typer.Option(None, "--version", help="Version to show (same as PATH@vN)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON."),
         storage_option: list[str] = StorageOption) -> None:
    """Rows, splits, categories, classes, schema and lineage of one version."""
    from edgemine.jobs.datasets import dataset_show

    info = dataset_show(ref, version=version, storage_options=_options(storage_option))
    if as_json:
        return _echo(info, True)
    typer.echo(f"{info['dataset']}@v{info['version']}: {info['rows']} rows from {info['drives']} drives")
    _warn_duplicates(f"v{info['version']}", info["duplicate_frame_ids"])
    typer.echo("  splits:     " + ", ".join(f"{k}={v}" for k, v in info["splits"].items()))
    typer.echo("  categories: " + ", ".join(f"{k}={v}" for k, v in info["categories"].items()))
    typer.echo("  classes:    " + ", ".join(f"{i}={c}" for i, c in enumerate(info["classes"])))
    typer.echo("  columns:    " + ", ".join(f"{c['name']} ({c['type']})" for c in info["schema"]))
    for k, v in info["lineage"].items():
        typer.echo(f"  {k}: {_value(v)}")


@datasets_app.command("diff", epilog=examples("edgemine datasets diff data/edge_cases@v2 data/edge_cases@v3",
                                              "edgemine datasets diff data/edge_cases@v2 v3 --json"))
def diff(refs: list[str] = typer.Argument(..., help="PATH@vA PATH@vB (or PATH@vA vB)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON."),
         storage_option: list[str] = StorageOption) -> None:
    """Rows added/removed/relabelled, classes and columns added between two versions."""
    from edgemine.errors import ConfigError
    from edgemine.jobs.datasets import dataset_diff

    options = _options(storage_option)
    old = [re.fullmatch(r"@?v?(\d+)", r) for r in refs[1:]]
    if len(refs) == 3 and all(old):  # the old forms PATH A B / PATH vA vB, still understood
        a, b = (int(m.group(1)) for m in old if m)
        typer.echo(f"note: write 'datasets diff {refs[0]}@v{a} {refs[0]}@v{b}' (PATH@vN, as every command takes)",
                   err=True)
        d = dataset_diff(refs[0], a, b, storage_options=options)
    elif len(refs) == 2:
        d = dataset_diff(refs[0], refs[1], storage_options=options)
    else:
        raise ConfigError(f"diff takes two versions, PATH@vA PATH@vB; got {refs}")
    if as_json:
        return _echo(d, True)
    a, b = d["from"], d["to"]
    typer.echo(f"v{a} -> v{b}: +{d['rows_added']} rows, -{d['rows_removed']} rows, {d['relabeled']} relabelled "
               f"({d['rows']['from']} -> {d['rows']['to']} rows)")
    _warn_duplicates(f"v{a}", d["duplicate_frame_ids"]["from"])
    _warn_duplicates(f"v{b}", d["duplicate_frame_ids"]["to"])
    if d["added_by_category"]:
        typer.echo("  added: " + ", ".join(f"{k}={v}" for k, v in d["added_by_category"].items()))
    if d["classes_added"]:
        typer.echo(f"  classes added: {d['classes_added']}")
    if d["columns_added"] or d["columns_removed"]:
        typer.echo(f"  columns added: {d['columns_added']}  removed: {d['columns_removed']}")


@datasets_app.command("classes", epilog=examples("edgemine datasets classes data/edge_cases@v3"))
def classes(ref: str = typer.Argument(..., help="Dataset path, optionally pinned: PATH@vN."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON."),
            storage_option: list[str] = StorageOption) -> None:
    """The class list of a version: index<TAB>class (an index never changes between versions)."""
    from edgemine.jobs.datasets import dataset_classes

    names = dataset_classes(ref, storage_options=_options(storage_option))
    if as_json:
        return _echo(names, True)
    for i, c in enumerate(names):
        typer.echo(f"{i}\t{c}")


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
