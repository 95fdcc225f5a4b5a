"""Frames a training set carries: copied or hard-linked under its root, or referenced where they are.

`--frames copy|link` put each frame at `<root>/frames/<drive_id>/<frame_id><ext>` and store that path
relative to the root as the row's `uri` (the source goes to `source_uri`), so the dataset can be moved or read
from another machine. `--frames reference` keeps the source URI, which must then be absolute (a path or an
object-store URI): a relative one means nothing outside the publisher's working directory.

A frame's place is a function of (drive_id, frame_id), and a published row never changes, so the same file is
what a later publish (or a racing one) would put there: an identical file already in place is kept, a
different one is refused, never overwritten. Files are written to a temporary name and renamed.

A `file://` root or uri is a local path (`local_path`: percent-decoded, `file://localhost/` too, as deltalake
reads it): frames are placed under it and readers get the path, which PIL and open() can use. An object-store
root or uri (`s3://...`) goes through pyarrow.fs (`filesystem`): the dataset's deltalake storage options are
mapped to S3FileSystem arguments where they are the standard AWS_* keys (`s3_arguments`), and `copy` puts
frames under an object-store root as it does under a local one (an object appears whole when its upload
completes, so there is no temporary name there).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
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


# deltalake's standard AWS_* storage options (case-insensitive there too) -> pyarrow.fs.S3FileSystem arguments;
# AWS_ENDPOINT_URL and AWS_ALLOW_HTTP become endpoint_override and scheme. Other options are deltalake's own.
_S3_ARGUMENTS = {"AWS_ACCESS_KEY_ID": "access_key", "AWS_SECRET_ACCESS_KEY": "secret_key",
                 "AWS_SESSION_TOKEN": "session_token", "AWS_REGION": "region"}


def s3_arguments(storage_options: Mapping[str, str] | None) -> dict[str, Any]:
    """The S3FileSystem arguments that `storage_options` (deltalake's) name; {} when they name none.

    An `http://` AWS_ENDPOINT_URL needs AWS_ALLOW_HTTP=true, as deltalake requires.
    """
    opts = {k.upper(): v for k, v in (storage_options or {}).items()}
    args: dict[str, Any] = {_S3_ARGUMENTS[k]: v for k, v in opts.items() if k in _S3_ARGUMENTS}
    endpoint = opts.get("AWS_ENDPOINT_URL") or opts.get("AWS_ENDPOINT")
    allow_http = str(opts.get("AWS_ALLOW_HTTP", "")).lower() in ("true", "1", "yes")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        scheme = parts.scheme.lower() or ("http" if allow_http else "https")
        if scheme == "http" and not allow_http:
            raise ConfigError(f"AWS_ENDPOINT_URL={endpoint!r} is plain http; set AWS_ALLOW_HTTP=true to allow it")
        args["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        args["scheme"] = scheme
    return args


def filesystem(uri: str, storage_options: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(pyarrow.fs.FileSystem, path in it) for an object-store URI: an `s3://` one with the storage options'
    AWS_* keys (`s3_arguments`), else `FileSystem.from_uri` (the environment's credentials)."""
    import pyarrow.fs as pafs

    scheme, _, rest = uri.partition("://")
    args = s3_arguments(storage_options) if scheme.lower() == "s3" else {}
    if args:
        return pafs.S3FileSystem(**args), rest
    return pafs.FileSystem.from_uri(uri)


def store_paths(uris: list[str], storage_options: Mapping[str, str] | None = None) -> tuple[Any, list[str]]:
    """One filesystem (`filesystem` of the first) and each URI's path in it, for URIs on one object store."""
    if not uris:
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), []
    fs, first = filesystem(uris[0], storage_options)
    if not uris[0].endswith(first):
        raise ConfigError(f"{uris[0]!r}: pyarrow names it {first!r}, not a path within the URI")
    prefix = uris[0][: len(uris[0]) - len(first)]  # s3://bkt/k -> bkt/k: the same prefix comes off them all
    if any(not u.startswith(prefix) for u in uris):
        raise ConfigError(f"the files are not all on one store {prefix!r}: {uris[:3]}")
    return fs, [u[len(prefix):] for u in uris]


def read_frame(uri: str, storage_options: Mapping[str, str] | None = None) -> bytes:
    """A frame's bytes: a local path (or file:// URI) with open(), an object-store URI through `filesystem`."""
    uri = local_path(uri)
    if "://" in uri:
        try:
            fs, path = filesystem(uri, storage_options)
            with fs.open_input_stream(path) as f:
                return bytes(f.read())
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputNotFoundError(f"frame {uri!r} cannot be read: {exc}") from exc
    try:
        with open(uri, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputNotFoundError(f"frame {uri!r} cannot be read: {exc.strerror or exc}") from exc


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


def _same_file(path: str, data: bytes | None, src: str) -> bool:
    if data is None:  # link mode: the same inode, or the same bytes
        try:
            if os.path.samefile(path, src):
                return True
        except OSError:
            return False
        data = read_frame(src)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def _place_one(src: str, dest: str, mode: str, frame_id: str) -> bool:
    """Put `src` at `dest`; True when written, False when an identical file was there. Refuses a different one."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    data = read_frame(src) if mode == "copy" else None
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


def _place_remote(fs: Any, src: str, dest: str, frame_id: str) -> bool:
    """`_place_one` for an object-store root (copy): True when written, False when an identical object was there."""
    import pyarrow.fs as pafs

    data = read_frame(src)
    where = f"{dest!r} on {fs.type_name}"
    try:
        if fs.get_file_info(dest).type == pafs.FileType.File:
            with fs.open_input_stream(dest) as f:
                if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                    return False
            raise IncompatibleArtifactError(
                f"{where} already holds a different file than {src} (frame_id={frame_id!r}); a dataset's frames "
                f"are never overwritten - publish to a new dataset, or remove that object if it is stray")
        with fs.open_output_stream(dest) as f:  # the object appears whole when the upload completes
            f.write(data)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"frame {frame_id!r} cannot be copied to {where}: {exc}") from exc
    return True


def place_frames(rows: pa.Table, root: str, *, mode: FrameMode,
                 on_frame: Callable[[int], None] | None = None,
                 storage_options: Mapping[str, str] | None = None) -> tuple[pa.Table, FrameStats]:
    """Rows with `uri` pointing at the dataset's own frames (copy/link) or checked absolute (reference).

    `source_uri` is set to where each frame was read from. Only the rows passed are touched: call it with
    the rows a publish adds. An object-store root takes `copy` (written through `filesystem(root,
    storage_options)`); sources on an object store are read with the environment's credentials.
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
        remote = is_remote(root)
        if remote and mode == "link":
            raise ConfigError(f"--frames link hard-links frames under the dataset root, which must be local; "
                              f"{root!r} is not - use --frames copy (or reference with object-store frame URIs)")
        if remote:
            fs, base = filesystem(root, storage_options)
            base = base.rstrip("/")
        local_root = local_path(root)
        drives = rows.column("drive_id").to_pylist()
        out, placed, kept = [], 0, 0
        for k, (fid, drive, src) in enumerate(zip(ids, drives, sources, strict=True)):
            rel = frame_path(drive, fid, src)
            src_path = local_path(src) if mode == "link" else src
            if (_place_remote(fs, src, f"{base}/{rel}", fid) if remote
                    else _place_one(src_path, os.path.join(local_root, *rel.split("/")), mode, fid)):
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
