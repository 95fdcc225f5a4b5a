"""`edgemine publish`: confirmed edge cases from the review store -> a new Delta version (or continuously)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer

from edgemine.jobs.commands import examples
from edgemine.jobs.commands.datasets import StorageOption
from edgemine.jobs.commands.review import DbOption


def _gate_action(value: str, flag: str) -> str:
    from edgemine.errors import ConfigError
    from edgemine.jobs.publish_gates import GATE_ACTIONS

    if value not in GATE_ACTIONS:
        raise ConfigError(f"{flag} {value!r} is not one of {list(GATE_ACTIONS)}")
    return value


def _db_url(db: str | None) -> str:
    """--db, else $EDGEMINE_DATABASE_URL (typer reads it), else the review service's default store."""
    import os

    from edgemine.errors import InputNotFoundError
    from edgemine.jobs.commands.review import _settings

    url = _settings(db).database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = url.removeprefix("sqlite:///")
        if not os.path.exists(path):
            raise InputNotFoundError(f"no review store at {path!r} (--db {url}); give --db or "
                                     f"EDGEMINE_DATABASE_URL")
    return url


def _runs_line(added_by_run: dict[str, int], run: str | None) -> str:
    """Which runs went into the version, rows added by each: without --run every run in the store goes in."""
    parts = ", ".join(f"{rid} +{n}" for rid, n in sorted(added_by_run.items()))
    if run is not None:
        return f"  run: {parts}"
    return f"  runs ({len(added_by_run)}, every run in the store; --run RUN_ID publishes one): {parts}"


class _SignalStop:
    """The watch's stop flag, set by a signal handler. Not a threading.Event: the handler runs in the thread
    that waits on it, and could find the Event's (non-reentrant) lock held by that very wait."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def set(self) -> None:
        self.signum = self.signum or -1

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float) -> bool:
        import time

        time.sleep(timeout)  # a signal's handler runs during it; the watch sees the flag at most `timeout` later
        return self.is_set()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Any]:
    """SIGINT and SIGTERM stop `publish --watch` gracefully: the first one sets the stop flag (the watch then
    publishes what is waiting, gates applied, and returns) and puts the previous handlers back, so a second
    Ctrl-C interrupts that last publish as it would any job (exit 130). Off the main thread (where signals
    cannot be caught) it is a plain Event."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield threading.Event()
        return
    stop = _SignalStop()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def first(signum: int, frame: object) -> None:
        stop.signum = signum
        restore()
        with contextlib.suppress(OSError):  # os.write: a handler must not re-enter sys.stderr's buffer
            os.write(2, f"stopping ({signal.Signals(signum).name}): publishing the confirmations waiting now; "
                        f"Ctrl-C again aborts that\n".encode())

    for s in previous:
        signal.signal(s, first)
    try:
        yield stop
    finally:
        restore()


def publish(
    db: str | None = DbOption,
    dataset: str = typer.Option(..., "--dataset", help="Delta table path (created on first publish)."),
    run: str = typer.Option(None, "--run", help="Only this mining run's confirmations."),
    splits: str = typer.Option("train=0.8,val=0.2", "--splits", help="Split ratios, by drive."),
    frames: str = typer.Option(
        "copy", "--frames",
        help="copy: frames into DATASET/frames/ (the dataset stands alone: moved, or read on another machine); "
             "link: hard links there (same filesystem, no extra space); reference: keep the source URIs "
             "(absolute paths or object-store URIs the readers can reach)."),
    empty_split: str = typer.Option("refuse", "--empty-split", help="A split with 0 rows: refuse|warn|off."),
    min_agreement: str = typer.Option(
        "none", "--min-agreement", help="Floor on each run's agreement (--agreement-metric), or 'none'."),
    agreement_metric: str = typer.Option(
        "krippendorff_alpha", "--agreement-metric", help="krippendorff_alpha|fleiss_kappa|cohen_kappa_mean."),
    min_reviews: int = typer.Option(1, "--min-reviews", help="Reviews each published row needs at least."),
    category_without_train: str = typer.Option(
        "warn", "--category-without-train", help="A category with no train rows: refuse|warn|off."),
    watch: bool = typer.Option(False, "--watch", help="Keep publishing as confirmations arrive (Ctrl-C stops)."),
    interval: float = typer.Option(5.0, "--interval", help="--watch: publish at least this often (s)."),
    min_new: int = typer.Option(20, "--min-new", help="--watch: publish as soon as this many are waiting."),
    storage_option: list[str] = StorageOption,
) -> None:
    """Publish consensus-confirmed edge cases as one new dataset version, with lineage, classes and gates."""
    import statistics

    from edgemine.errors import ConfigError
    from edgemine.jobs.dataset_frames import FRAME_MODES
    from edgemine.jobs.datasets import latest_version, parse_storage_options
    from edgemine.jobs.publish import PublishGates, SplitPolicy, table_exists
    from edgemine.jobs.publish_review import publish_from_review, watch_and_publish

    if frames not in FRAME_MODES:
        raise ConfigError(f"--frames {frames!r} is not one of {list(FRAME_MODES)}")
    try:
        floor = None if min_agreement.lower() in ("none", "off", "") else float(min_agreement)
    except ValueError:
        raise ConfigError(f"--min-agreement {min_agreement!r} is not a number or 'none'") from None
    gates = PublishGates(empty_split=_gate_action(empty_split, "--empty-split"),  # type: ignore[arg-type]
                         min_agreement=floor, agreement_metric=agreement_metric,  # type: ignore[arg-type]
                         min_reviews=min_reviews,
                         category_without_train=_gate_action(category_without_train,  # type: ignore[arg-type]
                                                             "--category-without-train"))
    policy = SplitPolicy.parse(splits)
    options = parse_storage_options(storage_option)
    url = _db_url(db)
    if not watch:
        out = publish_from_review(url, dataset, run_id=run, policy=policy, frames=frames,  # type: ignore[arg-type]
                                  gates=gates, storage_options=options)
        r = out.result
        for w in r.warnings:
            typer.echo(f"warning: {w}", err=True)
        if r.version is None and r.already_present:
            typer.echo(f"nothing new: {r.already_present} confirmed edge case(s) already in {dataset}")
        elif r.version is None:  # nothing went in: say why, and never call a missing dataset "in" it
            where = f"run {run!r}" if run else "the review store"
            state = (f"{dataset} stays at v{latest_version(dataset, storage_options=options)}"
                     if table_exists(dataset, options)
                     else f"{dataset} was not created")
            busy = len(out.left_out.get("in_another_publish", []))
            changed = len(out.left_out.get("changed_during_publish", []))
            if busy or changed:  # confirmations exist, but none could go into this version
                why = []
                if busy:
                    why.append(f"{busy} in another publish of {dataset}")
                if changed:
                    why.append(f"{changed} amended or undone during this one (the next publish takes them)")
                typer.echo(f"nothing published: {where}'s confirmed edge cases are {', '.join(why)}; {state}")
            else:
                typer.echo(f"nothing to publish: {where} has no confirmed edge cases yet; {state}")
        else:
            typer.echo(f"published {dataset}@v{r.version}: +{r.added} rows ({r.already_present} already present)"
                       + (f"; classes added {list(r.classes_added)}" if r.classes_added else ""))
            typer.echo(_runs_line(out.added_by_run, run))
        return

    last_refusal: list[str] = []

    def refused(message: str) -> None:
        if last_refusal != [message]:  # say each reason once, not at every poll
            typer.echo(message, err=True)
            last_refusal[:] = [message]

    def report(p) -> None:  # noqa: ANN001 - ReviewPublish
        lat = p.latencies_s
        med = statistics.median(lat) if lat else float("nan")
        last_refusal.clear()
        for w in p.result.warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(f"published {dataset}@v{p.result.version}: +{p.result.added} rows; "
                   f"decision->dataset median {med:.1f}s, max {max(lat, default=float('nan')):.1f}s")
        typer.echo(_runs_line(p.added_by_run, run))

    with _stop_on_signals() as stop:
        typer.echo(f"watching {url} -> {dataset} (every {interval:g}s or {min_new} new); Ctrl-C stops")
        done = watch_and_publish(url, dataset, interval_s=interval, min_new=min_new, policy=policy, stop=stop,
                                 on_publish=report, frames=frames, gates=gates,  # type: ignore[arg-type]
                                 on_refused=refused, run_id=run, storage_options=options)
    rows = sum(p.result.added for p in done)
    said = f"stopped watching {dataset}: {len(done)} version(s) published while watching, +{rows} rows"
    if last_refusal:  # the last try, at the stop or before it, was refused: those confirmations still wait
        said += "; the confirmations refused above stay in the review store for the next publish"
    typer.echo(said)


def register(app: typer.Typer) -> None:
    app.command("publish", epilog=examples(
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --run RUN_ID",
        "EDGEMINE_DATABASE_URL=sqlite:///review.db edgemine publish --dataset data/edge_cases --frames link",
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --min-agreement 0.4 --min-reviews 2",
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --watch --interval 30 --min-new 10",
        "edgemine publish --db sqlite:///review.db --dataset s3://bkt/edge_cases --storage-option AWS_REGION=eu-west-1",
    ))(publish)
