"""Where rare events go: event lengths and their placement in drives, honouring the rare rate.

Pure numpy; the renderer only asks "which event, if any, covers frame i of drive d".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.errors import ConfigError

FPS = 10
MIN_EVENT_FRAMES = 1 * FPS  # 1 s
MAX_EVENT_FRAMES = 5 * FPS  # 5 s
MIN_GAP_FRAMES = 10  # normal frames between two events of one drive

RARE_CATEGORIES: tuple[str, ...] = (
    "construction_zone",
    "animal_on_road",
    "overturned_vehicle",
    "unusual_pedestrian",
    "emergency_vehicle",
    "debris",
    "wrong_way_vehicle",
    "tunnel_exit_glare",
    "snow_covered_road",
)


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


def event_lengths(target: int, *, max_len: int, rng: np.random.Generator) -> list[int]:
    """Lengths (frames) of events whose sum is exactly `target` when target >= MIN_EVENT_FRAMES.

    A target below one event's minimum still gets one minimum-length event (the overshoot is under 1 s).
    """
    lo = min(MIN_EVENT_FRAMES, max_len)
    hi = max_len
    lengths: list[int] = []
    rem = target
    while rem > 0:
        if rem <= lo:
            length = lo
        elif rem <= hi:
            length = rem
        else:
            length = int(rng.integers(lo, min(hi, rem - lo) + 1))
        lengths.append(length)
        rem -= length
    return lengths


def plan_events(
    n_drives: int, frames_per_drive: int, rare_rate: float, *, rng: np.random.Generator
) -> list[Event]:
    """Choose rare events for a batch of drives so that rare frames / all frames ~= rare_rate."""
    if not 0.0 <= rare_rate <= 0.5:
        raise ConfigError(f"rare_rate={rare_rate} must be between 0 and 0.5")
    total = n_drives * frames_per_drive
    target = int(round(rare_rate * total))
    if target == 0:
        return []
    max_len = min(MAX_EVENT_FRAMES, frames_per_drive)
    lengths = event_lengths(target, max_len=max_len, rng=rng)
    occupied: list[list[tuple[int, int]]] = [[] for _ in range(n_drives)]

    def fits(d: int, s: int, length: int) -> bool:
        if s < 0 or s + length > frames_per_drive:
            return False
        return all(s + length + MIN_GAP_FRAMES <= a or b + MIN_GAP_FRAMES <= s for a, b in occupied[d])

    events: list[Event] = []
    order = np.argsort(-np.asarray(lengths), kind="stable")  # longest first packs best
    for k in order:
        length = lengths[int(k)]
        placed = None
        for _ in range(64):
            d = int(rng.integers(n_drives))
            s = int(rng.integers(frames_per_drive - length + 1))
            if fits(d, s, length):
                placed = (d, s)
                break
        if placed is None:  # dense schedules: scan every slot in a random drive order
            for d in rng.permutation(n_drives):
                free = [s for s in range(frames_per_drive - length + 1) if fits(int(d), s, length)]
                if free:
                    placed = (int(d), free[int(rng.integers(len(free)))])
                    break
        if placed is None:
            raise ConfigError(
                f"rare_rate={rare_rate} cannot be placed in {n_drives} drive(s) of {frames_per_drive} frames "
                "(events need 1-5 s plus gaps); lower the rate or add drives"
            )
        occupied[placed[0]].append((placed[1], placed[1] + length))
        events.append(Event("", placed[0], placed[1], length, ""))

    events.sort(key=lambda e: (e.drive, e.start))
    # Categories cycle through a shuffled list so every category appears once there are >= 9 events.
    cats = [RARE_CATEGORIES[i] for i in rng.permutation(len(RARE_CATEGORIES))]
    return [
        Event(f"evt-{i:05d}", e.drive, e.start, e.length, cats[i % len(cats)]) for i, e in enumerate(events)
    ]
