"""`python -m edgemine ...` is the `edgemine` command (what a submitted Ray job runs)."""

from edgemine.jobs.cli import run

run()
