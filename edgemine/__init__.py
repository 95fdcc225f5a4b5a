"""edgemine: edge-case mining for driving data - embed, score, aggregate, select, review, publish.

One import root. This package is the shared core every layer may import: errors (`edgemine.errors`), the Arrow
contracts (`edgemine.contracts`), list-column matrices (`edgemine.vectors`) and small runtime helpers
(`edgemine.runtime`). The layers install beneath it from the design card's top-level folders:

    edgemine.mining       pure scoring, aggregation, selection, agreement (imports only the core)
    edgemine.embeddings   encoders and the Ray embedding pipeline (imports only the core)
    edgemine.review_api   the review service (imports the core and mining)
    edgemine.jobs         the CLI, orchestration, publishing, the synthetic generator (imports anything)

`make lint` checks these layers (pyproject `[tool.importlinter]`). Importing `edgemine` imports nothing else, so
`edgemine --help` stays quick.
"""

__version__ = "0.1.0"
