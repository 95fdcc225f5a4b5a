"""Where rare events go: event lengths and their placement in drives, honouring the rare rate.

Pure numpy; the renderer only asks "which event, if any, covers frame i of drive d".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgemine.errors import ConfigError
from edgemine.review_api.settings import DEFAULT_CATEGORIES

FPS = 10
MIN_EVENT_FRAMES = 1 * FPS  # 1 s
MAX_EVENT_FRAMES = 5 * FPS  # 5 s
MIN_GAP_FRAMES = 10  # normal frames between two events of one drive

# The rare events are the review taxonomy's categories (in its order: the schedule draws from it by seed).
RARE_CATEGORIES: tuple[str, ...] = tuple(c for c in DEFAULT_CATEGORIES if c != "other")


@dataclass(frozen=True)
class Event:
    event_id: str
    drive: int
    start: int  # first frame index within the drive
    length: int  # frames
    category: str

    @property
    def stop(self) -> int:
        return self.start + self.length


def event_frames(event_seconds: tuple[float, float]) -> tuple[int, int]:
    """(shortest, longest) event length in frames for (shortest, longest) in seconds, validated."""
    try:
        lo_s, hi_s = (float(x) for x in event_seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"event_seconds={event_seconds!r} must be a (shortest, longest) pair of seconds") from None
    if not (math.isfinite(lo_s) and math.isfinite(hi_s) and 1 / FPS <= lo_s <= hi_s):
        raise ConfigError(f"event_seconds={tuple(event_seconds)} must be (shortest, longest) seconds with "
                          f"{1 / FPS:g} <= shortest <= longest (one frame is {1 / FPS:g} s)")
    return round(lo_s * FPS), round(hi_s * FPS)


def check_recurrence(recurrence: tuple[int, int]) -> tuple[int, int]:
    """Validated (lo, hi): each rare category appears in lo..hi events."""
    try:
        lo, hi = recurrence
    except (TypeError, ValueError):
        raise ConfigError(f"recurrence={recurrence!r} must be a (lo, hi) pair of event counts") from None
    if not all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in (lo, hi)) or not 1 <= lo <= hi:
        raise ConfigError(f"recurrence={tuple(recurrence)} must be whole numbers with 1 <= lo <= hi")
    return int(lo), int(hi)


def event_lengths(
    target: int, *, max_len: int, rng: np.random.Generator, min_len: int = MIN_EVENT_FRAMES
) -> list[int]:
    """Lengths (frames) of events whose sum is exactly `target` when target >= min_len.

    Lengths are between min_len and max_len (min_len is capped at max_len). A target below one event's
    minimum still gets one minimum-length event, and so does a remainder when max_len < 2 * min_len - 1
    leaves no exact split: the overshoot is always under min_len frames.
    """
    lo = min(min_len, max_len)
    hi = max_len
    lengths: list[int] = []
    rem = target
    while rem > 0:
        if rem <= lo:
            length = lo
        elif rem <= hi:
            length = rem
        elif min(hi, rem - lo) < lo:  # only when hi < 2 * lo - 1: no exact split of rem, overshoot by < lo
            length = hi
        else:
            length = int(rng.integers(lo, min(hi, rem - lo) + 1))
        lengths.append(length)
        rem -= length
    return lengths


def group_sizes(n_events: int, recurrence: tuple[int, int], *, rng: np.random.Generator) -> list[int]:
    """How many events share each category: as many groups as possible (up to len(RARE_CATEGORIES)), each of
    lo..hi events.

    Sizes never exceed hi. Fewer than lo events make one group; when no split into lo..hi exists (e.g.
    recurrence (3, 3) and 10 events) some groups are smaller than lo; more than len(RARE_CATEGORIES) * hi
    events need more groups than there are categories, and a category then spans several groups.
    """
    lo, hi = recurrence
    if n_events == 0:
        return []
    if n_events < lo:
        return [n_events]
    k = max(min(len(RARE_CATEGORIES), n_events // lo), -(-n_events // hi))
    sizes = [lo if k * lo <= n_events else n_events // k] * k
    for _ in range(n_events - sum(sizes)):
        open_ = [g for g, size in enumerate(sizes) if size < hi]
        sizes[open_[int(rng.integers(len(open_)))]] += 1
    return sizes


def plan_events(
    n_drives: int,
    frames_per_drive: int,
    rare_rate: float,
    *,
    rng: np.random.Generator,
    event_seconds: tuple[float, float] = (MIN_EVENT_FRAMES / FPS, MAX_EVENT_FRAMES / FPS),
    recurrence: tuple[int, int] = (1, 1),
) -> list[Event]:
    """Choose rare events for a batch of drives so that rare frames / all frames ~= rare_rate.

    Events last `event_seconds` (shortest, longest). With the default `recurrence` (1, 1) categories cycle
    through a shuffled list of RARE_CATEGORIES (unique while there are at most 9 events, as always); otherwise
    events are grouped by `group_sizes` and each group's category is placed in distinct drives.
    """
    if not 0.0 <= rare_rate <= 0.5:
        raise ConfigError(f"rare_rate={rare_rate} must be between 0 and 0.5")
    min_frames, max_frames = event_frames(event_seconds)
    lo_rec, hi_rec = check_recurrence(recurrence)
    grouped = (lo_rec, hi_rec) != (1, 1)
    if grouped and lo_rec > n_drives:
        raise ConfigError(f"recurrence={(lo_rec, hi_rec)} needs at least {lo_rec} drives (the events of a category "
                          f"are in different drives); got {n_drives}")
    total = n_drives * frames_per_drive
    target = int(round(rare_rate * total))
    if target == 0:
        return []
    max_len = min(max_frames, frames_per_drive)
    lengths = event_lengths(target, max_len=max_len, rng=rng, min_len=min_frames)
    occupied: list[list[tuple[int, int]]] = [[] for _ in range(n_drives)]
    # slot[k]: the category index of event k when grouped; drives already holding each category
    slot: list[int | None] = [None] * len(lengths)
    if grouped:
        sizes = group_sizes(len(lengths), (min(lo_rec, n_drives), min(hi_rec, n_drives)), rng=rng)
        members = rng.permutation(len(lengths))
        for g, chunk in enumerate(np.split(members, np.cumsum(sizes)[:-1])):
            for k in chunk:
                slot[int(k)] = g % len(RARE_CATEGORIES)
    used: list[set[int]] = [set() for _ in RARE_CATEGORIES]

    def fits(d: int, s: int, length: int, c: int | None) -> bool:
        if s < 0 or s + length > frames_per_drive or (c is not None and d in used[c]):
            return False
        return all(s + length + MIN_GAP_FRAMES <= a or b + MIN_GAP_FRAMES <= s for a, b in occupied[d])

    placements: list[tuple[int, int, int, int | None]] = []  # drive, start, length, category index
    order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first packs best
    for k in order:
        length, c = lengths[int(k)], slot[int(k)]
        placed = None
        for _ in range(64):
            d = int(rng.integers(n_drives))
            s = int(rng.integers(frames_per_drive - length + 1))
            if fits(d, s, length, c):
                placed = (d, s)
                break
        if placed is None:  # dense schedules: scan every slot in a random drive order
            for d in rng.permutation(n_drives):
                free = [s for s in range(frames_per_drive - length + 1) if fits(int(d), s, length, c)]
                if free:
                    placed = (int(d), free[int(rng.integers(len(free)))])
                    break
        if placed is None:
            raise ConfigError(
                f"rare_rate={rare_rate} cannot be placed in {n_drives} drive(s) of {frames_per_drive} frames "
                f"(events need {min_frames / FPS:g}-{max_frames / FPS:g} s plus gaps"
                + (f", each category in different drives with recurrence={(lo_rec, hi_rec)}" if grouped else "")
                + "); lower the rate or add drives"
            )
        occupied[placed[0]].append((placed[1], placed[1] + length))
        if c is not None:
            used[c].add(placed[0])
        placements.append((placed[0], placed[1], length, c))
    placements.sort(key=lambda p: (p[0], p[1]))  # event ids follow drive and start
    # Categories come from a shuffled list; ungrouped, they cycle so every category appears once there are
    # >= 9 events.
    cats = [RARE_CATEGORIES[i] for i in rng.permutation(len(RARE_CATEGORIES))]
    return [
        Event(f"evt-{i:05d}", d, s, length, cats[i % len(cats) if c is None else c])
        for i, (d, s, length, c) in enumerate(placements)
    ]
