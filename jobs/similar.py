"""More like this: the nearest frames of a finished mining run to frames a reviewer confirmed.

    from edgemine.jobs.similar import similar_frames, write_sheet
    table = similar_frames("runs/r1", ["drv-003-0000-00042"], k=20, exclude_same_drive=True)
    write_sheet(table, "near.png")

Reads the run's `index/frames/` (written by `edgemine.jobs.mine.run_mine`), its scores.parquet (scores and
`event_id`) and manifest (`drive_id`, `uri`). A frame's nearest neighbours are mostly the frames just before
and after it; `exclude_same_drive` / `exclude_same_event` ask for the same kind of moment elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from edgemine.contracts import manifest_base_dir
from edgemine.errors import ConfigError, FrameError, InputNotFoundError, NotFoundError
from edgemine.jobs.run_state import FRAMES_INDEX, positions
from edgemine.mining.index import VectorIndex
from edgemine.vectors import list_matrix


def similar_frames(run_dir: str | os.PathLike[str], frame_ids: list[str], *, k: int = 50,
                   exclude_same_drive: bool = False, exclude_same_event: bool = False) -> pa.Table:
    """The k nearest frames of the run to each given frame (itself excluded), closest first.

    `exclude_same_drive`: no neighbour from the query's drive (still the k nearest among the other drives);
    `exclude_same_event`: none from the query's event (scores.parquet `event_id`; a frame outside every
    event excludes only itself). Columns: query_frame_id, rank, frame_id, distance, uri, score (the
    neighbour's fused score), drive_id, event_id (the neighbour's), query_drive_id, query_uri.
    """
    run = Path(run_dir)
    if not (run / "run.json").exists():
        raise InputNotFoundError(f"{str(run)!r} is not a mining run (no run.json)")
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    if not frame_ids:
        raise ConfigError("give at least one frame id")
    info = json.loads((run / "run.json").read_text())
    idx = VectorIndex.load(run / FRAMES_INDEX)
    all_ids = idx.ids.column("frame_id").combine_chunks()
    rows = positions(pa.array(frame_ids, pa.string()), all_ids)
    unknown = [f for f, r in zip(frame_ids, rows, strict=True) if r < 0]
    if unknown:
        raise NotFoundError(f"frame_id {unknown[0]!r} is not among the run's {idx.count} scored frames "
                            f"({len(unknown)} unknown)")
    if idx.meta.kind == "ivf_pq":  # PQ codes are lossy: query with the stored embeddings instead
        src = info["embeddings"]
        t = ds.dataset(src["path"], format="parquet").to_table(
            filter=ds.field("frame_id").isin(frame_ids), columns=["frame_id", "embedding"])
        t = t.take(pa.array(positions(pa.array(frame_ids, pa.string()), t.column("frame_id").combine_chunks())))
        q = list_matrix(t.column("embedding"), name="embedding", dim=idx.meta.dim).values
    else:
        q = idx.reconstruct(rows.tolist())
    frames = Path(info["spec"]["frames"])
    man = ds.dataset(str(frames), format="parquet").to_table(columns=["frame_id", "drive_id", "uri"])
    man = man.take(_aligned(all_ids, man))  # in index row order
    scores = ds.dataset(str(run / "scores.parquet"), format="parquet").to_table(
        columns=["frame_id", "score", "event_id"])
    scores = scores.take(_aligned(all_ids, scores))
    groups = _groups(man.column("drive_id") if exclude_same_drive else None,
                     scores.column("event_id") if exclude_same_event else None, idx.count)
    if groups is None:
        d, nb = idx.self_search(rows, q, min(k, idx.count - 1)) if idx.count > 1 else (
            np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64))
    else:
        d, nb = idx.search_other_groups(q, min(k, idx.count), query_groups=groups[rows], row_groups=groups)
    qid, rank, nrow, dist = [], [], [], []
    for qi, f in enumerate(frame_ids):
        r = 0
        for dd, j in zip(d[qi], nb[qi], strict=True):
            if j < 0 or j == rows[qi]:
                continue
            r += 1
            qid.append(f)
            rank.append(r)
            nrow.append(int(j))
            dist.append(float(dd))
    take = pa.array(nrow, pa.int64())
    qtake = pa.array(rows[positions(pa.array(qid, pa.string()), pa.array(frame_ids, pa.string()))], pa.int64())
    base = manifest_base_dir(frames)

    def uris(t: pa.Array) -> pa.Array:
        return pa.array([u if u is None or "://" in u or os.path.isabs(u) else os.path.normpath(os.path.join(base, u))
                         for u in man.column("uri").take(t).to_pylist()], pa.string())

    return pa.table({"query_frame_id": pa.array(qid, pa.string()), "rank": pa.array(rank, pa.int32()),
                     "frame_id": all_ids.take(take), "distance": pa.array(dist, pa.float32()), "uri": uris(take),
                     "score": scores.column("score").take(take).cast(pa.float32()),
                     "drive_id": man.column("drive_id").take(take).cast(pa.string()),
                     "event_id": scores.column("event_id").take(take),
                     "query_drive_id": man.column("drive_id").take(qtake).cast(pa.string()),
                     "query_uri": uris(qtake)})


def _aligned(ids: pa.Array, table: pa.Table) -> pa.Array:
    """Row of `table` for each id (null where absent, so a missing row reads as nulls)."""
    pos = positions(ids, table.column("frame_id").combine_chunks())
    return pa.array(pos, pa.int64(), mask=pos < 0)


def _groups(drives: pa.ChunkedArray | None, events: pa.ChunkedArray | None, n: int) -> np.ndarray | None:
    """An integer group per index row whose members a query may not return, or None for leave-one-out.

    Events lie within one drive, so excluding the drive excludes the event too; a frame outside every event
    is a group of its own (only itself is left out)."""
    col = drives if drives is not None else events
    if col is None:
        return None
    codes = np.asarray(pc.fill_null(col.combine_chunks().dictionary_encode().indices, -1)
                       .to_numpy(zero_copy_only=False), dtype=np.int64)
    alone = np.flatnonzero(codes < 0)
    codes[alone] = codes.max(initial=-1) + 1 + np.arange(len(alone))
    return codes


def write_sheet(table: pa.Table, out: str | os.PathLike[str], *, tile: int = 128) -> Path:
    """A PNG contact sheet of `similar_frames` output: one row per query, the query first (outlined), then
    its neighbours closest first, each captioned with its drive and distance (the query with its drive)."""
    from PIL import Image, ImageDraw

    from edgemine.embeddings.decode import read_bytes
    from edgemine.images import decode_rgb

    queries = list(dict.fromkeys(table.column("query_frame_id").to_pylist()))
    if not queries:
        raise ConfigError("no neighbours to draw: the table is empty")
    rows = table.to_pylist()
    by_query = {qf: [r for r in rows if r["query_frame_id"] == qf] for qf in queries}  # each has >= 1 row
    cols = 1 + max(len(v) for v in by_query.values())
    caption = 28
    sheet = Image.new("RGB", (cols * tile, len(queries) * (tile + caption)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    def paste(uri: str | None, x: int, y: int) -> None:
        try:
            if uri is None:
                raise FrameError("no uri")
            im = decode_rgb(read_bytes(uri), name=uri).resize((tile - 4, tile - 4))
        except FrameError:  # a frame that cannot be shown is a grey tile with a cross, not a failed sheet
            im = Image.new("RGB", (tile - 4, tile - 4), (200, 200, 200))
            ImageDraw.Draw(im).line([(0, 0), (tile - 5, tile - 5)], fill=(120, 120, 120), width=2)
            ImageDraw.Draw(im).line([(0, tile - 5), (tile - 5, 0)], fill=(120, 120, 120), width=2)
        sheet.paste(im, (x + 2, y + 2))

    for r, qf in enumerate(queries):
        y = r * (tile + caption)
        q_uri, q_drive = by_query[qf][0]["query_uri"], by_query[qf][0]["query_drive_id"]
        paste(q_uri, 0, y)
        draw.rectangle([0, y, tile - 1, y + tile - 1], outline=(200, 30, 30), width=2)
        draw.text((3, y + tile + 2), f"query {q_drive or ''}"[:22], fill=(160, 20, 20))
        draw.text((3, y + tile + 14), qf[-20:], fill=(60, 60, 60))
        for c, nb in enumerate(by_query[qf], start=1):
            paste(nb["uri"], c * tile, y)
            draw.text((c * tile + 3, y + tile + 2), f"{nb['drive_id'] or ''}"[:22], fill=(20, 20, 20))
            draw.text((c * tile + 3, y + tile + 14), f"#{nb['rank']} d={nb['distance']:.3f}", fill=(60, 60, 60))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out

