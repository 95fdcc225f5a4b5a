"""`python -m edgemine ...` is the `edgemine` command (what a submitted Ray job runs)."""

import sys

from edgemine.jobs.cli import main

sys.exit(main())
