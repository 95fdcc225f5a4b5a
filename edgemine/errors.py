"""Every exception edgemine raises on purpose lives here.

Library code raises these; the CLI prints their message on one line, and only `review_api` turns them
into HTTP errors. Messages name the offending value, so a user can act on them without a traceback.
"""

from __future__ import annotations


class EdgemineError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ConfigError(EdgemineError, ValueError):
    """A job spec, flag or setting has a bad value."""


class SchemaError(EdgemineError, ValueError):
    """A table does not match its contract (missing column, wrong type, duplicates, nulls, empty)."""


class InputNotFoundError(EdgemineError, FileNotFoundError):
    """A path or URI the user gave does not exist."""


class IncompatibleArtifactError(EdgemineError):
    """Artifacts from different encoders/configs were mixed (index vs embeddings, resume vs new run)."""


class MissingDependencyError(EdgemineError, ImportError):
    """An optional extra is needed; the message says what to install."""


class ReviewError(EdgemineError):
    """A review-queue operation is not allowed in the current state (e.g. lease expired)."""


class NotFoundError(EdgemineError, LookupError):
    """A named thing (run, item, reviewer, dataset version) does not exist."""


class FrameError(EdgemineError):
    """One frame cannot be used (missing, unreadable, corrupt, too small); it goes to errors.parquet.

    `stage` is the errors.parquet stage (validate | decode | embed | score); the message is the reason.
    """

    def __init__(self, reason: str, *, stage: str = "decode") -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class InvalidFieldError(EdgemineError, ValueError):
    """A request field has a value its context does not allow (e.g. a category outside the run's taxonomy)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class LeaseExpiredError(ReviewError):
    """A review lease ran out (or was released) before the decision arrived; the item went back to the queue."""


class PublishRefusedError(EdgemineError):
    """A publish gate refused a training-set version (empty split, low agreement, too few reviews, ...).

    The message names the figure and the CLI flag that would allow it; `gate` is the gate's name, and
    `allow` the `PublishGates` settings that would let the version through (for library callers).
    """

    def __init__(self, gate: str, message: str, *, allow: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.gate = gate
        self.allow = dict(allow or {})
