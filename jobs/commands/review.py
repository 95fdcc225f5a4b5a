"""`edgemine serve`, `edgemine reviewers ...`, `edgemine review ...`: the review service and its store.

`--db` takes a SQLAlchemy URL (default: $EDGEMINE_DATABASE_URL, else sqlite:///edgemine-review.db);
`postgresql://user@host:port/db` selects PostgreSQL. FastAPI, uvicorn and SQLAlchemy load inside the commands.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from edgemine.jobs.commands import examples

DB_HELP = "Review store URL: sqlite:///FILE (default sqlite:///edgemine-review.db) or postgresql://USER@HOST:PORT/DB."
DbOption = typer.Option(None, "--db", envvar="EDGEMINE_DATABASE_URL", help=DB_HELP, show_envvar=True)

reviewers_app = typer.Typer(help="People who review: add (prints the token once), list, revoke.",
                            no_args_is_help=True,
                            epilog=examples("edgemine reviewers add alice --role admin --db sqlite:///review.db",
                                            "edgemine reviewers list --db sqlite:///review.db"))
review_app = typer.Typer(help="Import mining runs, recompute consensus, read metrics, export decisions.",
                         no_args_is_help=True,
                         epilog=examples("edgemine review import runs/r1 --db sqlite:///review.db",
                                         "edgemine review metrics RUN_ID --db sqlite:///review.db"))


def _settings(db: str | None, **overrides: Any) -> Any:
    from edgemine.review_api.settings import load_settings

    return load_settings(database_url=db, **overrides)


def _database(db: str | None) -> Any:
    from edgemine.review_api.db import Database

    settings = _settings(db)
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    database.create_all()
    return database


def serve(
    db: str | None = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (costs latency under load)."),
) -> None:
    """Run the review service: the reviewer page at /, the API (OpenAPI at /openapi.json), /metrics."""
    import uvicorn

    from edgemine.review_api.app import create_app, quiet_gc

    app = create_app(_settings(db))
    typer.echo(f"edgemine review on http://{host}:{port}/ (store {app.state.review.db.url.split('@')[-1]})")
    quiet_gc()
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="warning")


@reviewers_app.command("add", epilog=examples(
    "edgemine reviewers add alice --role admin --db sqlite:///review.db",
    "edgemine reviewers add bob --db sqlite:///review.db"))
def reviewers_add(
    name: str = typer.Argument(..., help="The person's name (unique)."),
    role: str = typer.Option("reviewer", "--role", help="reviewer, lead or admin."),
    db: str | None = DbOption,
) -> None:
    """Add a person and print their bearer token. It is shown this once; only its hash is stored."""
    from edgemine.review_api import storage

    database = _database(db)
    with database.write() as s:
        reviewer, token = storage.create_reviewer(s, name=name, role=role, now=datetime.now(UTC))
        typer.echo(f"added {reviewer.role} {reviewer.name!r}; token (shown once, keep it safe):", err=True)
    typer.echo(token)
    database.dispose()


@reviewers_app.command("list", epilog=examples("edgemine reviewers list --db sqlite:///review.db"))
def reviewers_list(db: str | None = DbOption) -> None:
    """List people and roles (never tokens)."""
    from edgemine.review_api import storage

    database = _database(db)
    with database.read() as s:
        for r in storage.list_reviewers(s):
            typer.echo(f"{r.name}\t{r.role}\t{'active' if r.active else 'revoked'}")
    database.dispose()


@reviewers_app.command("revoke", epilog=examples("edgemine reviewers revoke bob --db sqlite:///review.db"))
def reviewers_revoke(name: str = typer.Argument(...), db: str | None = DbOption) -> None:
    """Revoke a person's token (their past decisions stay)."""
    from edgemine.review_api import storage

    database = _database(db)
    with database.write() as s:
        storage.deactivate_reviewer(s, name=name)
    typer.echo(f"revoked {name!r}")
    database.dispose()


def _tags(value: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in value.split(",") if t.strip()) if value else None


@review_app.command("import", epilog=examples(
    "edgemine review import runs/r1 --ground-truth logs/ground_truth.parquet --db sqlite:///review.db",
    "edgemine review import runs/r1 --overlap 0.3 --overlap-reviews 3 --gold-rate 0.05 --db sqlite:///review.db"))
def review_import(
    run_dir: Path = typer.Argument(..., help="A mining run folder (candidates.parquet, run.json)."),
    db: str | None = DbOption,
    ground_truth: Path | None = typer.Option(None, "--ground-truth", help="Known answers (frame_id, category, "
                                             "is_rare), e.g. ground_truth.parquet of `edgemine synth`."),
    categories: str | None = typer.Option(None, "--categories", help="Comma-separated category taxonomy."),
    root_causes: str | None = typer.Option(None, "--root-causes", help="Comma-separated root-cause tags."),
    overlap: float | None = typer.Option(None, "--overlap", help="Share of items reviewed by several people."),
    overlap_reviews: int | None = typer.Option(None, "--overlap-reviews", help="Reviews per overlap item (2-3)."),
    gold_fraction: float | None = typer.Option(None, "--gold-fraction",
                                               help="Share of items held out as gold (needs --ground-truth)."),
    gold_rate: float | None = typer.Option(None, "--gold-rate", help="Chance that `next` serves a gold item."),
    lease_seconds: int | None = typer.Option(None, "--lease-seconds", help="Lease length."),
) -> None:
    """Import a run's candidates (idempotent per run) and fix its review policy."""
    from edgemine.review_api.importer import Policy, import_run

    settings = _settings(db)
    policy = Policy.from_settings(settings, categories=_tags(categories), root_causes=_tags(root_causes),
                                  overlap_fraction=overlap, overlap_reviews=overlap_reviews,
                                  gold_fraction=gold_fraction, gold_rate=gold_rate, lease_seconds=lease_seconds)
    database = _database(db)
    report = import_run(database, run_dir, policy=policy, ground_truth=ground_truth)
    database.dispose()
    state = "already imported" if report.inserted == 0 and report.already_present else "imported"
    typer.echo(f"{state} run {report.run_id!r}: {report.items} items ({report.inserted} new), {report.gold} gold, "
               f"{report.overlap} with overlapping reviews, {report.skipped} skipped")
    for row in report.skipped_rows[:20]:
        typer.echo(f"  skipped frame_id={row['frame_id']!r}: {row['reason']}")
    if report.skipped > 20:
        typer.echo(f"  ... and {report.skipped - 20} more")


@review_app.command("consensus", epilog=examples("edgemine review consensus RUN_ID --db sqlite:///review.db"))
def review_consensus(run_id: str = typer.Argument(...), db: str | None = DbOption) -> None:
    """Re-run Dawid-Skene over a run; items with >= 3 reviews take its answer."""
    from edgemine.review_api import storage

    database = _database(db)
    with database.write() as s:
        report = storage.refresh_consensus(s, run_id=run_id, now=datetime.now(UTC))
    database.dispose()
    typer.echo(json.dumps(report.__dict__, indent=2))


@review_app.command("metrics", epilog=examples("edgemine review metrics RUN_ID --db sqlite:///review.db"))
def review_metrics(run_id: str = typer.Argument(...), db: str | None = DbOption) -> None:
    """Print a run's agreement, reviewer and queue metrics as JSON."""
    from edgemine.review_api import storage

    settings = _settings(db)
    database = _database(db)
    with database.read() as s:
        m = storage.run_metrics(s, run_id=run_id, now=datetime.now(UTC),
                                cost_per_hour=settings.reviewer_cost_per_hour)
    database.dispose()
    typer.echo(json.dumps(m, indent=2, default=str))


@review_app.command("export", epilog=examples(
    "edgemine review export --out exports/ --db sqlite:///review.db",
    "edgemine review export --out exports/r1 --run RUN_ID --db sqlite:///review.db"))
def review_export(
    out: Path = typer.Option(..., "--out", help="Folder for decisions.parquet and confirmed.parquet."),
    run_id: str | None = typer.Option(None, "--run", help="Only this run."),
    db: str | None = DbOption,
) -> None:
    """Write every decision (DECISIONS_SCHEMA) and the confirmed edge cases (CONFIRMED_ITEMS_SCHEMA)."""
    import os

    import pyarrow.parquet as pq

    from edgemine.contracts import DECISIONS_SCHEMA
    from edgemine.review_api import storage

    out.mkdir(parents=True, exist_ok=True)
    database = _database(db)
    counts = {}
    with database.read() as s:
        for name, schema, batches in (
            ("decisions", DECISIONS_SCHEMA, storage.iter_decisions(s, run_id=run_id)),
            ("confirmed", storage.CONFIRMED_ITEMS_SCHEMA, storage.iter_confirmed_items(s, run_id=run_id)),
        ):
            tmp = out / f"{name}.parquet.tmp"
            n = 0
            with pq.ParquetWriter(tmp, schema) as writer:
                for batch in batches:
                    writer.write_table(batch)
                    n += batch.num_rows
            os.replace(tmp, out / f"{name}.parquet")
            counts[name] = n
    database.dispose()
    typer.echo(f"wrote {counts['decisions']} decisions and {counts['confirmed']} confirmed edge cases to {out}")


def register(app: typer.Typer) -> None:
    app.command("serve", epilog=examples(
        "edgemine serve --db sqlite:///review.db",
        "edgemine serve --db postgresql://user@host:5432/db --host 0.0.0.0 --port 8000"))(serve)
    app.add_typer(reviewers_app, name="reviewers")
    app.add_typer(review_app, name="review")
