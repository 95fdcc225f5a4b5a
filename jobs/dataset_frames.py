"""Frames a training set carries: copied or hard-linked under its root, or referenced where they are.

`--frames copy|link` put each frame at `<root>/frames/<drive_id>/<frame_id><ext>` and store that path
relative to the root as the row's `uri` (the source goes to `source_uri`), so the dataset can be moved or read
from another machine. `--frames reference` keeps the source URI, which must then be absolute (a path or an
object-store URI): a relative one means nothing outside the publisher's working directory.

A frame's place is a function of (drive_id, frame_id), and a published row never changes, so the same file is
what a later publish (or a racing one) would put there: an identical file already in place is kept, a
different one is refused, never overwritten. Files are written to a temporary name and renamed.

A `file://` root or uri is a local path (`local_path`: percent-decoded, `file://localhost/` too, as deltalake
reads it): frames are placed under it and readers get the path, which PIL and open() can use.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from edgemine.contracts import FRAME_MODES, FRAMES_DIR
from edgemine.errors import ConfigError, IncompatibleArtifactError, InputNotFoundError, SchemaError

FrameMode = Literal["copy", "link", "reference"]
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def is_absolute_uri(uri: str) -> bool:
    return "://" in uri or os.path.isabs(uri)


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(uri: str) -> str:
    """A `file://` URI as the local path it names; any other string unchanged.

    Read as deltalake reads a table URI: percent-escapes decoded, an empty host or `localhost` only.
    """
    if not uri.startswith("file://"):
        return uri
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{uri!r} names the host {parts.netloc!r}; a file URI is file:///absolute/path")
    return unquote(parts.path)


def resolve_frame_uri(root: str, uri: str) -> str:
    """A row's `uri` as a reader opens it: relative ones are resolved against the dataset root.

    `file://` roots and uris become local paths (PIL cannot open a file URI); object-store ones stay URIs.
    """
    if uri is None:
        return uri
    if is_absolute_uri(uri):
        return local_path(uri)
    root = local_path(root)
    if "://" in root:
        return root.rstrip("/") + "/" + uri
    return os.path.normpath(os.path.join(os.path.abspath(root), uri))


def segment(name: str) -> str:
    """A path segment for a drive or frame id: the id itself when it is safe, else a cleaned id plus a hash."""
    if _SAFE.fullmatch(name) and name not in (".", ".."):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._")[:80] or "x"
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def frame_path(drive_id: str, frame_id: str, source: str) -> str:
    """Where a frame lives inside the dataset root (posix, relative): frames/<drive>/<frame><ext>."""
    m = _EXT.search(source.split("?")[0])
    return posixpath.join(FRAMES_DIR, segment(drive_id), segment(frame_id) + (m.group(0).lower() if m else ""))


@dataclass(frozen=True)
class FrameStats:
    mode: str
    placed: int = 0  # files written (copied or linked) by this publish
    kept: int = 0  # identical files already in place (an earlier or racing publish)

    def lineage(self) -> dict[str, int | str]:
        return {"mode": self.mode, "placed": self.placed, "kept": self.kept}


def _read_source(uri: str) -> bytes:
    if "://" in uri:
        import pyarrow.fs as pafs

        try:
            fs, path = pafs.FileSystem.from_uri(uri)
            with fs.open_input_stream(path) as f:
                return f.read()
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputNotFoundError(f"frame {uri!r} cannot be read: {exc}") from exc
    try:
        with open(uri, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputNotFoundError(f"frame {uri!r} cannot be read: {exc.strerror or exc}") from exc


def _same_file(path: str, data: bytes | None, src: str) -> bool:
    if data is None:  # link mode: the same inode, or the same bytes
        try:
            if os.path.samefile(path, src):
                return True
        except OSError:
            return False
        data = _read_source(src)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def _place_one(src: str, dest: str, mode: str, frame_id: str) -> bool:
    """Put `src` at `dest`; True when written, False when an identical file was there. Refuses a different one."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    data = _read_source(src) if mode == "copy" else None
    if os.path.exists(dest):
        if _same_file(dest, data, src):
            return False
        raise IncompatibleArtifactError(
            f"{dest} already holds a different file than {src} (frame_id={frame_id!r}); a dataset's frames are "
            f"never overwritten - publish to a new dataset, or remove that file if it is stray")
    tmp = f"{dest}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        if mode == "copy":
            with open(tmp, "wb") as f:
                f.write(data or b"")
        else:
            if "://" in src:
                raise ConfigError(f"--frames link needs a local frame; {src!r} (frame_id={frame_id!r}) is remote - "
                                  f"use --frames copy")
            try:
                os.link(src, tmp)
            except FileNotFoundError as exc:
                raise InputNotFoundError(f"frame {src!r} does not exist (frame_id={frame_id!r})") from exc
            except OSError as exc:
                raise ConfigError(f"--frames link cannot hard-link {src!r} into {os.path.dirname(dest)!r} "
                                  f"({exc.strerror or exc}; a hard link needs one filesystem) - use --frames copy"
                                  ) from exc
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def place_frames(rows: pa.Table, root: str, *, mode: FrameMode,
                 on_frame: Callable[[int], None] | None = None) -> tuple[pa.Table, FrameStats]:
    """Rows with `uri` pointing at the dataset's own frames (copy/link) or checked absolute (reference).

    `source_uri` is set to where each frame was read from. Only the rows passed are touched: call it with
    the rows a publish adds.
    """
    if mode not in FRAME_MODES:
        raise ConfigError(f"frames={mode!r} is not one of {list(FRAME_MODES)}")
    uris = rows.column("uri").to_pylist()
    ids = rows.column("frame_id").to_pylist()
    prior = rows.column("source_uri").to_pylist() if "source_uri" in rows.column_names else [None] * len(uris)
    sources = [p or u for p, u in zip(prior, uris, strict=True)]
    for fid, src in zip(ids, sources, strict=True):
        if not src or not is_absolute_uri(src):
            raise SchemaError(f"frame_id={fid!r} has uri {src!r}, which is not absolute; a training set needs a path "
                              f"or object-store URI it can find from anywhere (import the run with its run dir)")
    if mode == "reference":
        out = sources
        stats = FrameStats(mode)
    else:
        if is_remote(root):
            raise ConfigError(f"--frames {mode} writes frames under the dataset root, which must be local; "
                              f"{root!r} is not - use --frames reference with object-store frame URIs")
        local_root = local_path(root)
        drives = rows.column("drive_id").to_pylist()
        out, placed, kept = [], 0, 0
        for k, (fid, drive, src) in enumerate(zip(ids, drives, sources, strict=True)):
            rel = frame_path(drive, fid, src)
            src_path = local_path(src) if mode == "link" else src
            if _place_one(src_path, os.path.join(local_root, *rel.split("/")), mode, fid):
                placed += 1
            else:
                kept += 1
            out.append(rel)
            if on_frame is not None:
                on_frame(k + 1)
        stats = FrameStats(mode, placed, kept)
    table = rows.set_column(rows.column_names.index("uri"), "uri", pa.array(out, pa.string()))
    src_col = pa.array(sources, pa.string())
    if "source_uri" in table.column_names:
        table = table.set_column(table.column_names.index("source_uri"), "source_uri", src_col)
    else:
        table = table.append_column("source_uri", src_col)
    return table, stats
