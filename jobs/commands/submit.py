"""`edgemine submit` and `edgemine jobs list|status|logs|stop`: mining jobs on a Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgemine.jobs.commands import examples

ADDRESS_HELP = "Ray dashboard URL, e.g. http://127.0.0.1:8265 (or set EDGEMINE_RAY_ADDRESS)."
jobs_app = typer.Typer(help="Manage edgemine jobs on a Ray cluster.", no_args_is_help=True,
                        epilog=examples("edgemine jobs list --address http://HOST:8265",
                                        "edgemine jobs logs JOB_ID --address http://HOST:8265"))


def submit(
    spec: Path = typer.Argument(..., help="Mining job spec (YAML)."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    pip: list[str] = typer.Option([], "--pip", help="Extra pip requirement for the job's environment (repeat)."),
    job_id: str = typer.Option(None, "--job-id", help="Submission id (default: generated)."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and print its logs."),
) -> None:
    """Submit `edgemine mine JOB.yaml` to a Ray cluster through the Ray Jobs API."""
    from edgemine.jobs.submit import job_logs, submit_mining_job, wait_for

    s = submit_mining_job(spec, address=address, pip=pip, job_id=job_id)
    typer.echo(f"submitted {s.job_id} to {s.address}: {s.entrypoint}")
    if wait:
        status = wait_for(s.job_id, address=address)
        typer.echo(job_logs(s.job_id, address=address))
        typer.echo(f"{s.job_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


@jobs_app.command("list", epilog=examples("edgemine jobs list --address http://HOST:8265"))
def list_(address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
          as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Jobs on the cluster, oldest first."""
    from edgemine.jobs.submit import list_jobs

    rows = list_jobs(address=address)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['job_id']:<32} {r['status']:<10} {r['entrypoint']}")


@jobs_app.command("status", epilog=examples("edgemine jobs status JOB_ID --address http://HOST:8265"))
def status(job_id: str = typer.Argument(...), address: str = typer.Option(None, "--address", help=ADDRESS_HELP)
           ) -> None:
    """One job's status."""
    from edgemine.jobs.submit import job_status

    s = job_status(job_id, address=address)
    typer.echo(f"{s['job_id']}: {s['status']}" + (f" ({s['message']})" if s["message"] else ""))


@jobs_app.command("logs", epilog=examples("edgemine jobs logs JOB_ID --address http://HOST:8265"))
def logs(job_id: str = typer.Argument(...), address: str = typer.Option(None, "--address", help=ADDRESS_HELP)
         ) -> None:
    """One job's driver logs."""
    from edgemine.jobs.submit import job_logs

    typer.echo(job_logs(job_id, address=address), nl=False)


@jobs_app.command("stop", epilog=examples("edgemine jobs stop JOB_ID --address http://HOST:8265"))
def stop(job_id: str = typer.Argument(...), address: str = typer.Option(None, "--address", help=ADDRESS_HELP)
         ) -> None:
    """Ask a running job to stop."""
    from edgemine.jobs.submit import stop_job

    typer.echo(f"{job_id}: {'stop requested' if stop_job(job_id, address=address) else 'already finished'}")


def register(app: typer.Typer) -> None:
    app.command("submit", epilog=examples(
        "edgemine submit jobs/specs/example.yaml --address http://HOST:8265",
        "edgemine submit job.yaml --address http://HOST:8265 --wait"))(submit)
    app.add_typer(jobs_app, name="jobs")
