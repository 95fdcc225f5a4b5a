"""The review service's one validated settings object.

Every tunable is a field below with its meaning beside it. Values come from keyword arguments, then
environment variables prefixed `EDGEMINE_` (e.g. `EDGEMINE_DATABASE_URL`), then the defaults. Defaults
that are only safe on a laptop (a fixed admin token, relaxed SQLite durability) are refused outside
`environment="development"`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgemine.errors import ConfigError
from edgemine.limits import MAX_BODY_BYTES

Environment = Literal["development", "test", "production"]
SqliteSynchronous = Literal["FULL", "NORMAL", "OFF"]

DEFAULT_DATABASE_URL = "sqlite:///edgemine-review.db"
# The review taxonomy: what a reviewer may call a confirmed edge case (a run may set its own at import). The
# synthetic generator's rare events are these names but "other" (jobs/synth/schedule.py RARE_CATEGORIES).
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "construction_zone",
    "animal_on_road",
    "overturned_vehicle",
    "unusual_pedestrian",
    "emergency_vehicle",
    "debris",
    "wrong_way_vehicle",
    "tunnel_exit_glare",
    "snow_covered_road",
    "other",
)
DEFAULT_ROOT_CAUSES: tuple[str, ...] = (
    "novel_scene",
    "perception_miss",
    "label_ambiguity",
    "sensor_artifact",
    "weather_lighting",
    "occlusion",
    "rare_behaviour",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEMINE_", extra="forbid", frozen=True)

    environment: Environment = "development"
    # SQLAlchemy URL: sqlite:///path.db (WAL) or postgresql://user@host:port/db (psycopg 3).
    database_url: str = DEFAULT_DATABASE_URL
    # SQLite `PRAGMA synchronous`: FULL fsyncs the WAL on every commit, so an acknowledged decision
    # survives a kill or a power cut. Anything weaker is refused outside development.
    sqlite_synchronous: SqliteSynchronous = "FULL"
    # Connections per process (PostgreSQL); SQLite writes are serialised in-process anyway.
    pool_size: int = Field(10, ge=1, le=200)

    # Queue policy defaults for runs imported without their own (each run stores its own copy).
    lease_seconds: int = Field(600, ge=10, le=86_400)  # how long `next` holds an item for one reviewer
    # how long after a decision its reviewer may still amend or undo it (0: never); never once the item is
    # resolved by a lead, gold, or published (storage/audit.py)
    amend_window_seconds: int = Field(600, ge=0, le=86_400)
    overlap_fraction: float = Field(0.2, ge=0.0, le=1.0)  # share of items reviewed by several people, blind
    overlap_reviews: int = Field(3, ge=2, le=3)  # reviews per overlap item
    gold_rate: float = Field(0.1, ge=0.0, le=0.5)  # chance that `next` serves a gold item the reviewer lacks
    gold_fraction: float = Field(0.1, ge=0.0, le=1.0)  # share of a run's items held out as gold at import
    min_agreement: float = Field(0.6, ge=0.0, le=1.0)  # majority share below which an item goes to a lead
    ds_min_confidence: float = Field(0.7, ge=0.0, le=1.0)  # Dawid-Skene posterior below which it escalates
    categories: tuple[str, ...] = DEFAULT_CATEGORIES  # default edge-case categories of a run
    root_causes: tuple[str, ...] = DEFAULT_ROOT_CAUSES  # default root-cause tags of a run
    # After an item gets its 3rd review, Dawid-Skene re-runs over its run in the background, at most this
    # often per run (0: only on demand, POST /runs/{id}/consensus or `edgemine review consensus`); a refresh
    # that takes long waits 10x its own duration before the next (routes/items.py DS_MAX_SHARE).
    ds_refresh_seconds: float = Field(30.0, ge=0.0)

    # Cost of one reviewer hour in any currency (0: not reported); gives cost per item and per edge case.
    reviewer_cost_per_hour: float = Field(0.0, ge=0.0)
    # The most bytes a request body may have (EDGEMINE_MAX_BODY_BYTES); a bigger one is refused with 413 by its
    # Content-Length, or once that many bytes of a chunked body have arrived, before anything parses it.
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=1 << 30)
    # How long a verified token stays cached in memory; a revoked token keeps working at most this long.
    auth_cache_seconds: float = Field(5.0, ge=0.0, le=300.0)

    # Thumbnails are rendered once per (frame, size) and kept here; default: beside the SQLite file or a
    # temp folder for PostgreSQL.
    thumbnail_dir: Path | None = None
    thumbnail_px: int = Field(640, ge=64, le=4096)  # longest side of the main frame
    thumbnail_small_px: int = Field(192, ge=32, le=1024)  # longest side of evidence thumbnails

    # Development only: a fixed admin token, so a laptop demo needs no `reviewers add`. Refused elsewhere.
    dev_admin_token: SecretStr | None = None

    @model_validator(mode="after")
    def _refuse_unsafe_outside_development(self) -> Settings:
        if self.environment == "development":
            return self
        if self.dev_admin_token is not None:
            raise ValueError(f"dev_admin_token is only allowed in development, not environment={self.environment!r}")
        if self.sqlite_synchronous != "FULL":
            raise ValueError(
                f"sqlite_synchronous={self.sqlite_synchronous!r} can lose acknowledged decisions; "
                f"only FULL is allowed in environment={self.environment!r}"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from overrides + environment, turning validation errors into one ConfigError line."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            value = err.get("input")
            shown = f"={value!r}" if not isinstance(value, dict) and where != "settings" else ""
            parts.append(f"{where}{shown}: {err['msg']}")
        raise ConfigError("invalid review settings: " + "; ".join(parts)) from exc
