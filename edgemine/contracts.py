"""The Arrow schemas users rely on, in one place, and the manifest validator.

DESIGN.md names these contracts; this module is their single definition. Every table edgemine writes is
cast to (or checked against) one of the schemas below before it hits disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import InputNotFoundError, SchemaError
from edgemine.runtime import resolve_uri

# ---------------------------------------------------------------- frames manifest (input)
TIMESTAMP = pa.timestamp("us", tz="UTC")

MANIFEST_REQUIRED: dict[str, pa.DataType] = {
    "frame_id": pa.string(),
    "drive_id": pa.string(),
    "timestamp": TIMESTAMP,
    "uri": pa.string(),
}
MANIFEST_OPTIONAL: dict[str, pa.DataType] = {
    "probs": pa.list_(pa.float32()),
    "embedding": pa.list_(pa.float32()),  # fixed-size on disk; any float list is accepted
    "label": pa.string(),
}
MANIFEST_SCHEMA = pa.schema(
    [pa.field(n, t, nullable=False) for n, t in MANIFEST_REQUIRED.items()]
    + [pa.field(n, t) for n, t in MANIFEST_OPTIONAL.items()]
)

# ---------------------------------------------------------------- ground truth (synthetic logs only)
GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),  # null for frames outside any rare event
        pa.field("category", pa.string(), nullable=False),  # "normal" or a rare category
        pa.field("is_rare", pa.bool_(), nullable=False),
    ]
)


# ---------------------------------------------------------------- embeddings (embed step output)
def embeddings_schema(dim: int) -> pa.Schema:
    """Embedding shards: one row per usable frame."""
    if dim < 1:
        raise SchemaError(f"embedding dim={dim} must be >= 1")
    return pa.schema(
        [
            pa.field("frame_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("logits", pa.list_(pa.float32())),  # null when the encoder has no classifier head
            pa.field("encoder", pa.string(), nullable=False),
        ]
    )


# ---------------------------------------------------------------- errors (every unusable frame)
ERRORS_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # validate | decode | embed | score
        pa.field("reason", pa.string(), nullable=False),
    ]
)

# ---------------------------------------------------------------- scores (every scored frame)
SIGNAL_COLUMNS = ("novelty", "uncertainty", "rarity", "trigger")
# Per-signal columns are calibrated scores in [0, 1] (percentiles); null where a signal has no value for
# the frame. Extra columns after these: the raw values (`<signal>_raw`, e.g. kNN distance, entropy) and
# `triggers_fired` list<string>.
# Which calibration each frame's `novelty` percentile got: "reference" (the reference's kNN distances to its
# other drives), or the metadata value the reference lacks that it was calibrated within, as the guardrail and
# the reasons name it ("time_of_day=night"; spec `coverage.novelty: within`); null exactly where `novelty` is.
# Not run.json's `counts.novelty_calibration` ("other_drives" | "leave_one_out": how the reference's own
# calibration was measured).
NOVELTY_CALIBRATION = "novelty_calibration"
REFERENCE_CALIBRATION = "reference"
SCORES_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
    ]
    + [pa.field(s, pa.float32()) for s in SIGNAL_COLUMNS]
    + [pa.field(NOVELTY_CALIBRATION, pa.string())]
    + [pa.field("event_id", pa.string())]  # set when the frame is part of an event
)


def novelty_calibration_before_column(counts: Mapping[str, Any] | None) -> str | None:
    """The `novelty_calibration` of every frame with a novelty value in an output written before the column:
    "reference" when the run calibrated novelty within no value (`counts.coverage.conditioned` empty or absent,
    as in every run before `coverage.novelty`), None (unknown: only the reasons say) when it did."""
    coverage = (counts or {}).get("coverage")
    conditioned = coverage.get("conditioned") if isinstance(coverage, Mapping) else None
    return None if conditioned else REFERENCE_CALIBRATION


def _signal_stat_fields() -> list[pa.Field]:
    return [pa.field(f"{s}_{a}", pa.float64()) for s in ("score", *SIGNAL_COLUMNS) for a in ("max", "mean")]


# The sorted distinct `novelty_calibration`s of an event's (a scenario's) frames, nulls left out ([] when none has a
# novelty): more than one means its novelty_max/_mean mix percentiles calibrated differently.
NOVELTY_CALIBRATIONS = "novelty_calibrations"
NOVELTY_CALIBRATIONS_FIELD = pa.field(NOVELTY_CALIBRATIONS, pa.list_(pa.string()), nullable=False)


# ---------------------------------------------------------------- events / scenarios (aggregation output)
# An event: contiguous high-scoring frames of one drive. `<run>/events.parquet`.
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),  # "<drive_id>/e0001"
        pa.field("drive_id", pa.string(), nullable=False),
        pa.field("start", TIMESTAMP, nullable=False),
        pa.field("end", TIMESTAMP, nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),  # frames at or above the threshold
        pa.field("n_kept", pa.int64(), nullable=False),  # after temporal de-duplication
        pa.field("n_candidates", pa.int64(), nullable=False),
        pa.field("peak_frame_id", pa.string(), nullable=False),
    ]
    + _signal_stat_fields()
    + [NOVELTY_CALIBRATIONS_FIELD]
)
# A scenario: a cluster of candidate-pool frames. `<run>/scenarios.parquet`.
SCENARIOS_SCHEMA = pa.schema(
    [
        pa.field("scenario_id", pa.string(), nullable=False),  # "s000" holds the best-scoring frame
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("n_drives", pa.int64(), nullable=False),
        pa.field("n_events", pa.int64(), nullable=False),
        pa.field("n_candidates", pa.int64(), nullable=False),
        pa.field("peak_frame_id", pa.string(), nullable=False),
        pa.field("peak_uri", pa.string()),
    ]
    + _signal_stat_fields()
    + [NOVELTY_CALIBRATIONS_FIELD]
)

# ---------------------------------------------------------------- candidates (what reviewers see)
CANDIDATES_CORE_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1..budget
        pa.field("score", pa.float32(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("scenario_id", pa.string()),
        pa.field("event_id", pa.string()),
        # "event": a de-duplicated frame of an event above the thresholds; "fill": the best remaining frame
        # below them, taken to fill the budget (scenario_id and event_id are null)
        pa.field("selected_by", pa.string(), nullable=False),
    ]
    + [pa.field(s, pa.float32()) for s in SIGNAL_COLUMNS]
    + [pa.field(NOVELTY_CALIBRATION, pa.string())]
)
# Evidence a reviewer sees ("why is this novel"): nearest reference frames and the frames around the candidate.
CANDIDATES_EVIDENCE_SCHEMA = pa.schema(
    [
        pa.field("neighbor_ids", pa.list_(pa.string())),  # nearest reference frames, closest first
        pa.field("neighbor_uris", pa.list_(pa.string())),
        pa.field("neighbor_distances", pa.list_(pa.float32())),
        pa.field("context_uris", pa.list_(pa.string())),  # same drive, around the candidate in time
        pa.field("context_offsets_s", pa.list_(pa.float32())),  # each context frame's offset from it (s)
    ]
)
# candidates.parquet = CANDIDATES_CORE_SCHEMA + CANDIDATES_EVIDENCE_SCHEMA + the manifest's columns
# (frame_id not repeated; `uri` absolute).

# ---------------------------------------------------------------- review decisions
# Aggregation (edgemine.mining.spark_aggregate writes these; readers cast to them).
_AGG_STATS = _signal_stat_fields()
EVENT_FRAMES_SCHEMA = pa.schema(
    [pa.field("frame_id", pa.string()), pa.field("drive_id", pa.string()), pa.field("ts_us", pa.int64()),
     pa.field("score", pa.float64())] + [pa.field(s, pa.float64()) for s in SIGNAL_COLUMNS]
    + [pa.field(NOVELTY_CALIBRATION, pa.string()), pa.field("event_id", pa.string()), pa.field("keep", pa.bool_())])
EVENT_FRAME_COLUMNS = tuple(EVENT_FRAMES_SCHEMA.names)
EVENT_STATS_SCHEMA = pa.schema(
    [pa.field("event_id", pa.string()), pa.field("drive_id", pa.string()), pa.field("start_us", pa.int64()),
     pa.field("end_us", pa.int64()), pa.field("n_frames", pa.int64()), pa.field("n_kept", pa.int64()),
     pa.field("peak_frame_id", pa.string())] + _AGG_STATS + [NOVELTY_CALIBRATIONS_FIELD.with_nullable(True)])
SCENARIO_STATS_SCHEMA = pa.schema(
    [pa.field("scenario_id", pa.string()), pa.field("n_frames", pa.int64()), pa.field("n_drives", pa.int64()),
     pa.field("n_events", pa.int64()), pa.field("peak_frame_id", pa.string())] + _AGG_STATS
    + [NOVELTY_CALIBRATIONS_FIELD.with_nullable(True)])



VERDICTS = ("edge_case", "not_edge_case", "unsure")
DECISIONS_SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("root_causes", pa.list_(pa.string())),
        pa.field("notes", pa.string()),
        pa.field("seconds", pa.float32()),
        pa.field("created_at", TIMESTAMP, nullable=False),
    ]
)

# ---------------------------------------------------------------- training rows (Delta table edge_cases)
SPLITS = ("train", "val")
# A confirmed edge case: which frame, and what review concluded. Training rows are built from confirmed
# items, so both schemas carry these fields, defined once.
CONFIRMED_CASE_FIELDS = [
    pa.field("frame_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("drive_id", pa.string(), nullable=False),
    pa.field("timestamp", TIMESTAMP, nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("root_cause", pa.string()),
    pa.field("confidence", pa.float32(), nullable=False),
    pa.field("n_reviews", pa.int32(), nullable=False),
]
TRAINING_SCHEMA = pa.schema(
    CONFIRMED_CASE_FIELDS
    + [
        pa.field("split", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("score", pa.float32()),
    ]
    + [pa.field(s, pa.float32()) for s in SIGNAL_COLUMNS]
    # where the frame was read from at publish; `uri` is then the dataset's own copy, relative to its root
    + [pa.field("source_uri", pa.string())]
)
# How a publish carries frames (`--frames`): copy/link them under <root>/frames/ with `uri` relative to the
# root, or reference the source (an absolute path or an object-store URI).
FRAME_MODES = ("copy", "link", "reference")
FRAMES_DIR = "frames"
# Commit-metadata keys of a training-set version (besides the lineage): the class list as of this version
# (JSON list, only ever extended) and the classes this version appended.
CLASSES_KEY = "edgemine.classes"
CLASSES_ADDED_KEY = "edgemine.classes_added"


def canonical_type(t: pa.DataType) -> pa.DataType:
    """The type a training-set reader returns: string/large_string/string_view as string, any list as list<item>.

    Delta writers and readers name list items `element` and may hand strings back as views; a column's
    type is the same if its canonical type is.
    """
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(canonical_type(t.value_type))
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    return t


def canonical_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, canonical_type(f.type), f.nullable) for f in schema])


def evolve_training_schema(current: pa.Schema | None, incoming: pa.Schema, *, dataset: str) -> pa.Schema:
    """The schema a publish writes into a training set: `incoming`'s columns at the dataset's types.

    Schema evolution rules (docs/DESIGN.md "Training set"):
    - a publish may add a column; it is nullable, and earlier rows and versions read it as null;
    - a column's type never changes; the one conversion allowed is integers into a float64 column;
    - a column is never dropped: a metadata column the new rows lack reads null for them, and rows that lack
      a contract column are refused before this check;
    - a column whose values are all null in this publish takes the dataset's type, or is left out while the
      dataset has no such column (Delta has no null type).
    Raises SchemaError naming the column and both types.
    """
    have = {} if current is None else {f.name: f for f in current}
    fields = []
    for f in incoming:
        old = have.get(f.name)
        if old is None:
            if pa.types.is_null(f.type):
                continue
            # a column added to an existing dataset is nullable: its earlier rows have no value
            fields.append(pa.field(f.name, canonical_type(f.type), nullable=f.nullable or current is not None))
            continue
        want, got = canonical_type(old.type), canonical_type(f.type)
        ok = (got.equals(want) or pa.types.is_null(got)
              or (pa.types.is_integer(got) and pa.types.is_floating(want))
              or (pa.types.is_list(got) and pa.types.is_list(want) and pa.types.is_null(got.value_type)))
        if not ok:
            raise SchemaError(
                f"{dataset}: column {f.name!r} is {want} in the dataset but {got} in this publish; a column's type "
                f"never changes (only integers into a float64 column) - publish to a new dataset, or rename the "
                f"manifest column")
        fields.append(pa.field(f.name, want, nullable=f.nullable))
    return pa.schema(fields)


# ---------------------------------------------------------------- confirmed edge cases (review store -> publish)
# One row per confirmed item; `metadata` is the manifest's extra columns as a JSON object.
CONFIRMED_ITEMS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
    ]
    + CONFIRMED_CASE_FIELDS
    + [
        pa.field("consensus_method", pa.string(), nullable=False),
        pa.field("decided_at", TIMESTAMP, nullable=False),  # when the item's consensus was reached
        pa.field("rank", pa.int32()),
        pa.field("score", pa.float32()),
    ]
    + [pa.field(s, pa.float32()) for s in SIGNAL_COLUMNS]
    # as the item's candidate said (null: unknown, or no novelty); runs written before the column: the importer's
    # novelty_calibration_before_column
    + [pa.field(NOVELTY_CALIBRATION, pa.string())]
    + [
        pa.field("scenario_id", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("metadata", pa.string()),  # JSON object
    ]
)


# ================================================================ manifest validation
def _type_ok(name: str, actual: pa.DataType, expected: pa.DataType) -> bool:
    if name == "timestamp":
        return pa.types.is_timestamp(actual) or pa.types.is_int64(actual)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if name in ("probs", "embedding"):
        is_list = (
            pa.types.is_list(actual) or pa.types.is_large_list(actual) or pa.types.is_fixed_size_list(actual)
        )
        return is_list and pa.types.is_floating(actual.value_type)
    return actual.equals(expected)


def _describe(t: pa.DataType) -> str:
    return str(t)


def check_manifest_schema(schema: pa.Schema, *, source: str = "manifest") -> None:
    """Raise SchemaError if the schema cannot be read as a frames manifest."""
    names = set(schema.names)
    missing = [c for c in MANIFEST_REQUIRED if c not in names]
    if missing:
        raise SchemaError(
            f"{source}: missing required column(s) {missing}; required are {list(MANIFEST_REQUIRED)}"
        )
    for name, expected in {**MANIFEST_REQUIRED, **MANIFEST_OPTIONAL}.items():
        if name not in names:
            continue
        actual = schema.field(name).type
        if not _type_ok(name, actual, expected):
            want = "timestamp[us, UTC] or int64 microseconds" if name == "timestamp" else _describe(expected)
            raise SchemaError(f"{source}: column {name!r} has type {actual}, expected {want}")


def normalize_manifest_batch(
    batch: pa.RecordBatch | pa.Table, *, base_dir: str | None = None, source: str = "manifest"
) -> pa.Table:
    """Check one batch against the contract and return it normalised.

    Normalised means: `timestamp` as timestamp[us, UTC], string columns as `string`, relative `uri`s
    resolved against `base_dir`. Columns outside the contract are kept unchanged (they are metadata).
    Raises SchemaError naming the first problem; does not check frame_id uniqueness across batches.
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    check_manifest_schema(table.schema, source=source)
    for name in MANIFEST_REQUIRED:
        nulls = table.column(name).null_count
        if nulls:
            idx = pc.index(pc.is_null(table.column(name)), True).as_py()
            fid = table.column("frame_id")[idx].as_py() if name != "frame_id" else None
            where = f"frame_id={fid!r}" if fid is not None else f"row {idx}"
            raise SchemaError(f"{source}: column {name!r} has {nulls} null value(s), first at {where}")
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "timestamp":
            if pa.types.is_int64(col.type):
                col = col.cast(TIMESTAMP)
            elif col.type.tz is None:
                col = pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC").cast(TIMESTAMP)
            else:
                col = col.cast(TIMESTAMP)
        elif name in MANIFEST_REQUIRED or name == "label":
            col = col.cast(pa.string())
        if name == "uri":
            empty = pc.equal(pc.utf8_length(col), 0)
            if pc.any(empty).as_py():
                idx = pc.index(empty, True).as_py()
                fid = table.column("frame_id")[idx].as_py()
                raise SchemaError(f"{source}: column 'uri' is empty for frame_id={fid!r}")
            if base_dir is not None:
                col = pa.array([resolve_uri(u, base_dir) for u in col.to_pylist()], pa.string())
        cols[name] = col
    return pa.table(cols)


def _duplicate_ids(ids: pa.Array | pa.ChunkedArray) -> list[str]:
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    return [v.as_py() for v in dup.field("values")]


def validate_manifest(table: pa.Table, *, base_dir: str | None = None, source: str = "manifest") -> pa.Table:
    """Validate a whole in-memory manifest and return it normalised (see normalize_manifest_batch).

    Rejects: an empty table, a missing required column, a column of the wrong type, duplicate `frame_id`s,
    null required values. Extra columns are kept as metadata.
    """
    if table.num_rows == 0:
        raise SchemaError(f"{source}: the manifest is empty (0 rows)")
    out = normalize_manifest_batch(table, base_dir=base_dir, source=source)
    dups = _duplicate_ids(out.column("frame_id"))
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5])
        raise SchemaError(f"{source}: duplicate frame_id {shown} ({len(dups)} duplicated id(s))")
    return out


def manifest_base_dir(path: str | os.PathLike[str]) -> str:
    """The folder relative `uri`s are resolved against: the manifest file's folder, or the directory itself."""
    p = Path(path)
    return str(p.resolve() if p.is_dir() else p.resolve().parent)


def open_dataset(path: str | os.PathLike[str], *, what: str = "manifest"):  # noqa: ANN201 - pyarrow Dataset
    """A Parquet file or folder as a pyarrow dataset; a missing or unreadable one raises naming `what` and path."""
    import pyarrow.dataset as ds

    p = str(path)
    if "://" not in p and not os.path.exists(p):
        raise InputNotFoundError(f"{what} {p!r} does not exist")
    try:
        return ds.dataset(p, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{what} {p!r} is not readable as Parquet: {exc}") from exc


def iter_manifest(
    path: str | os.PathLike[str], *, batch_size: int = 65_536, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """Stream a manifest (Parquet file or folder of files) as validated, normalised batches.

    Memory stays bounded by `batch_size`; frame_id uniqueness is checked across batches with a set of
    ids (about 60 MB per million frames).
    """
    dataset = open_dataset(path)
    source = str(path)
    check_manifest_schema(dataset.schema, source=source)
    base_dir = manifest_base_dir(path) if "://" not in source else None
    seen: set[str] = set()
    rows = 0
    for batch in dataset.to_batches(columns=columns, batch_size=batch_size):
        if batch.num_rows == 0:
            continue
        table = normalize_manifest_batch(batch, base_dir=base_dir, source=source)
        ids = table.column("frame_id").to_pylist()
        inner = _duplicate_ids(table.column("frame_id"))
        if inner:
            raise SchemaError(f"{source}: duplicate frame_id {inner[0]!r}")
        clash = seen.intersection(ids)
        if clash:
            raise SchemaError(f"{source}: duplicate frame_id {sorted(clash)[0]!r}")
        seen.update(ids)
        rows += table.num_rows
        yield table
    if rows == 0:
        raise SchemaError(f"{source}: the manifest is empty (0 rows)")


def read_manifest(path: str | os.PathLike[str]) -> pa.Table:
    """Read and validate a whole manifest. For fleet-sized manifests use iter_manifest."""
    tables = list(iter_manifest(path))
    return pa.concat_tables(tables)


def cast_to(table: pa.Table, schema: pa.Schema, *, keep_extra: bool = True) -> pa.Table:
    """Cast `table`'s contract columns to `schema`, putting them first; extra columns follow if kept."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"table is missing column(s) {missing} required by its contract")
    cols = [table.column(f.name).cast(f.type) for f in schema]
    fields = list(schema)
    if keep_extra:
        for name in table.column_names:
            if name not in schema.names:
                cols.append(table.column(name))
                fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))
