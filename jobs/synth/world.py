"""A drive as a sequence of world states: ego motion, traffic, pedestrians, signs, and rare events.

Everything is in metres in the ego frame: `x` lateral (right positive), `z` distance ahead. Each drive has
its own random generator, so drives are independent and can be simulated in any order or process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edgemine.errors import ConfigError
from edgemine.jobs.synth.schedule import FPS, Event

DT = 1.0 / FPS
LANE_W = 3.5
COMMON_CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist")
LABELS: tuple[str, ...] = (*COMMON_CLASSES, "none")
ROAD_TYPES = ("highway", "urban", "rural")
TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
TRAFFIC = ("low", "medium", "high")
# The drive conditions a caller may restrict (`generate(conditions=...)`): DriveConfig field -> values, and the
# probabilities an unrestricted drive draws them with.
CONDITIONS: dict[str, tuple[str, ...]] = {
    "road_type": ROAD_TYPES, "time_of_day": TIMES_OF_DAY, "weather": WEATHERS, "traffic": TRAFFIC}
CONDITION_PROBS: dict[str, tuple[float, ...]] = {
    "road_type": (1 / 3, 1 / 3, 1 / 3),
    "time_of_day": (0.55, 0.2, 0.25),
    "weather": (0.6, 0.25, 0.15),
    "traffic": (1 / 3, 1 / 3, 1 / 3),
}
# Validated `conditions`: field -> probability of each value of CONDITIONS[field] (0 for excluded values).
# Fields left out draw exactly as an unrestricted drive does.
ConditionProbs = tuple[tuple[str, tuple[float, ...]], ...]

_CRUISE = {"highway": 28.0, "urban": 11.0, "rural": 19.0}
_LANES = {"highway": 3, "urban": 2, "rural": 2}
_N_VEHICLES = {"low": 2, "medium": 5, "high": 9}
_N_PEDESTRIANS = {"low": 1, "medium": 3, "high": 6}
# Size (width, height) in metres by kind.
SIZES = {
    "car": (1.8, 1.5),
    "truck": (2.5, 3.4),
    "pedestrian": (0.55, 1.75),
    "cyclist": (0.6, 1.7),
    "sign": (0.8, 2.6),
}
# Events during which the ego brakes hard with this probability (for metadata triggers).
_BRAKE_EVENTS = {"animal_on_road": 0.7, "debris": 0.5, "overturned_vehicle": 0.7,
                 "unusual_pedestrian": 0.6, "wrong_way_vehicle": 0.8, "construction_zone": 0.3}
CAR_COLORS = ((180, 30, 30), (30, 60, 160), (200, 200, 205), (40, 40, 45), (90, 110, 120),
              (220, 220, 215), (120, 20, 30), (20, 90, 60))


@dataclass(frozen=True)
class DriveConfig:
    drive_id: str
    road_type: str
    time_of_day: str
    weather: str
    traffic: str
    lanes: int
    ego_lane: int
    vehicle_id: str
    start_us: int
    lat0: float
    lon0: float
    heading: float


@dataclass
class Agent:
    kind: str
    x: float
    z: float
    v: float  # forward speed, m/s (negative: oncoming)
    color: tuple[int, int, int]
    seed: int  # per-agent appearance details


@dataclass
class FrameState:
    index: int
    speed: float
    accel: float
    yaw_rate: float
    odometer: float
    lat: float
    lon: float
    agents: list[Agent]
    event: Event | None = None
    event_progress: float = 0.0  # 0 at the event's first frame, 1 at its last
    noise_seed: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def condition_probs(
    conditions: Mapping[str, Sequence[str] | Mapping[str, float]] | None,
) -> ConditionProbs:
    """Validate `conditions` (see `generate`) into per-field value probabilities.

    A sequence of values keeps the default probabilities of those values, renormalised; a mapping
    value -> weight sets the probabilities (weights are normalised). Naming every value of a field
    without weights is the same as not naming the field.
    """
    if conditions is None:
        return ()
    if not isinstance(conditions, Mapping):
        raise ConfigError(f"conditions={conditions!r} must map a condition ({', '.join(CONDITIONS)}) to its values")
    out: list[tuple[str, tuple[float, ...]]] = []
    for key, allowed in conditions.items():
        if key not in CONDITIONS:
            raise ConfigError(f"conditions key {key!r} is not a drive condition; valid: {', '.join(CONDITIONS)}")
        values = CONDITIONS[key]
        if isinstance(allowed, str) or not isinstance(allowed, Sequence | Mapping):
            raise ConfigError(f"conditions[{key!r}]={allowed!r} must be a list of values or a value -> weight "
                              f"mapping; valid values: {', '.join(values)}")
        weights = dict(allowed) if isinstance(allowed, Mapping) else None
        names = list(allowed)
        for v in names:
            if v not in values:
                raise ConfigError(f"conditions[{key!r}] value {v!r} is not a {key}; valid: {', '.join(values)}")
        if weights is None:
            if set(names) == set(values):
                continue  # unrestricted: draw exactly as by default
            raw = [CONDITION_PROBS[key][i] if v in names else 0.0 for i, v in enumerate(values)]
        else:
            for v, w in weights.items():
                if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                    raise ConfigError(f"conditions[{key!r}][{v!r}]={w!r} must be a finite weight >= 0")
            raw = [float(weights.get(v, 0.0)) for v in values]
        total = sum(raw)
        if total <= 0:
            raise ConfigError(f"conditions[{key!r}]={allowed!r} allows no value; valid: {', '.join(values)}")
        out.append((key, tuple(r / total for r in raw)))
    return tuple(out)


def _draw(rng: np.random.Generator, key: str, probs: dict[str, tuple[float, ...]]) -> str:
    values = CONDITIONS[key]
    if key in probs:
        return values[int(rng.choice(len(values), p=probs[key]))]
    if key in ("road_type", "traffic"):  # the unrestricted draws, unchanged so default output is too
        return values[int(rng.integers(len(values)))]
    return values[int(rng.choice(len(values), p=list(CONDITION_PROBS[key])))]


def make_drive_config(
    drive_id: str, index: int, rng: np.random.Generator, *, base_us: int, conditions: ConditionProbs = ()
) -> DriveConfig:
    """Draw a drive's conditions and start; `conditions` (from `condition_probs`) restricts the draws."""
    probs = dict(conditions)
    road = _draw(rng, "road_type", probs)
    tod = _draw(rng, "time_of_day", probs)
    weather = _draw(rng, "weather", probs)
    lanes = _LANES[road]
    return DriveConfig(
        drive_id=drive_id,
        road_type=road,
        time_of_day=tod,
        weather=weather,
        traffic=_draw(rng, "traffic", probs),
        lanes=lanes,
        ego_lane=int(rng.integers(lanes)),
        vehicle_id=f"veh-{int(rng.integers(1, 41)):03d}",
        start_us=base_us + index * 3_600_000_000 + int(rng.integers(0, 3_000_000_000)),
        lat0=float(37.3 + rng.uniform(-0.2, 0.2)),
        lon0=float(-122.0 + rng.uniform(-0.2, 0.2)),
        heading=float(rng.uniform(0, 2 * np.pi)),
    )


def road_half_width(cfg: DriveConfig) -> tuple[float, float]:
    """Lateral extent (left, right) of the paved road relative to the ego's lane centre."""
    left = -(cfg.ego_lane + 0.5) * LANE_W
    right = (cfg.lanes - cfg.ego_lane - 0.5) * LANE_W
    return left, right


def _spawn_vehicle(cfg: DriveConfig, rng: np.random.Generator, ego_speed: float, *, far: bool) -> Agent:
    lane = int(rng.integers(cfg.lanes))
    kind = "truck" if rng.random() < (0.3 if cfg.road_type == "highway" else 0.12) else "car"
    z = float(rng.uniform(55, 85)) if far else float(rng.uniform(8, 70))
    v = max(0.0, ego_speed + float(rng.normal(-1.0, 2.5)))
    color = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))] if kind == "car" else (
        (230, 230, 225) if rng.random() < 0.6 else (60, 70, 140))
    return Agent(kind, (lane - cfg.ego_lane) * LANE_W + float(rng.normal(0, 0.15)), z, v, color,
                 int(rng.integers(1 << 30)))


def _spawn_vru(cfg: DriveConfig, rng: np.random.Generator, *, far: bool) -> Agent:
    left, right = road_half_width(cfg)
    side = right + float(rng.uniform(0.8, 2.5)) if rng.random() < 0.5 else left - float(rng.uniform(0.8, 2.5))
    if rng.random() < 0.35:
        kind, v, x = "cyclist", float(rng.uniform(3, 6)), (right - 0.6 if side > 0 else left + 0.6)
    else:
        kind, v, x = "pedestrian", float(rng.uniform(-1.5, 1.5)), side
    z = float(rng.uniform(40, 70)) if far else float(rng.uniform(6, 60))
    palette = ((60, 60, 70), (30, 40, 90), (110, 40, 40), (70, 90, 60), (150, 130, 100))
    return Agent(kind, x, z, v, palette[int(rng.integers(len(palette)))], int(rng.integers(1 << 30)))


def simulate_drive(
    cfg: DriveConfig, n_frames: int, events: list[Event], rng: np.random.Generator
) -> Iterator[FrameState]:
    """Yield one FrameState per frame (10 Hz). Consecutive states differ by one time step."""
    cruise = _CRUISE[cfg.road_type]
    speed = cruise * float(rng.uniform(0.8, 1.05))
    odo = 0.0
    heading = cfg.heading
    lat, lon = cfg.lat0, cfg.lon0
    agents = [_spawn_vehicle(cfg, rng, speed, far=False) for _ in range(_N_VEHICLES[cfg.traffic])]
    if cfg.road_type == "urban":
        agents += [_spawn_vru(cfg, rng, far=False) for _ in range(_N_PEDESTRIANS[cfg.traffic])]
    signs: list[Agent] = []
    next_sign = float(rng.uniform(20, 60))
    by_start = {e.start: e for e in events}
    active: Event | None = None
    brake_until = -1
    brake_random = -1
    yaw = 0.0
    for i in range(n_frames):
        if i in by_start:
            active = by_start[i]
            if rng.random() < _BRAKE_EVENTS.get(active.category, 0.0):
                brake_until = i + int(rng.integers(8, 20))
        if active is not None and i >= active.stop:
            active = None
        # A few ordinary hard brakes too, so a braking trigger alone is not a rare-event oracle.
        if brake_random < i and rng.random() < 0.002:
            brake_random = i + int(rng.integers(6, 15))
        braking = i < brake_until or i < brake_random
        target_acc = -5.5 if braking else 0.6 * (cruise - speed) / 3.0
        accel = float(np.clip(target_acc + rng.normal(0, 0.15), -8.0, 2.5))
        speed = max(0.0, speed + accel * DT)
        odo += speed * DT
        yaw = 0.9 * yaw + float(rng.normal(0, 0.01))
        heading += yaw * DT
        lat += speed * DT * np.cos(heading) / 111_111.0
        lon += speed * DT * np.sin(heading) / (111_111.0 * np.cos(np.radians(lat)))

        for a in agents:
            a.z += (a.v - speed) * DT
            if a.kind == "pedestrian":
                a.x += float(rng.normal(0, 0.02))
        keep = []
        for a in agents:
            if 3.0 < a.z < 95.0:
                keep.append(a)
            elif a.kind in ("car", "truck"):
                keep.append(_spawn_vehicle(cfg, rng, speed, far=True))
            else:
                keep.append(_spawn_vru(cfg, rng, far=True))
        agents = keep
        for s in signs:
            s.z -= speed * DT
        signs = [s for s in signs if s.z > 3.0]
        next_sign -= speed * DT
        if next_sign <= 0:
            left, right = road_half_width(cfg)
            x = right + 1.2 if rng.random() < 0.7 else left - 1.2
            signs.append(Agent("sign", x, 80.0, 0.0, (200, 30, 30) if rng.random() < 0.4 else (30, 80, 180),
                               int(rng.integers(1 << 30))))
            next_sign = float(rng.uniform(60, 160))

        progress = 0.0
        if active is not None:
            progress = (i - active.start) / max(1, active.length - 1)
        yield FrameState(
            index=i,
            speed=speed,
            accel=accel,
            yaw_rate=yaw,
            odometer=odo,
            lat=lat,
            lon=lon,
            agents=[replace(a) for a in agents + signs],
            event=active,
            event_progress=progress,
            noise_seed=int(rng.integers(1 << 30)),
        )


FOCAL = 0.9  # focal length as a fraction of the image width
CAM_HEIGHT = 1.5  # metres
HORIZON = 0.42  # horizon row as a fraction of the image height
MIN_LABEL_AREA = 0.002  # fraction of the image an object must cover to name the frame's label


def common_label(cfg: DriveConfig, state: FrameState, *, fov_tan: float = 0.5 / FOCAL) -> str:
    """The frame's common-class label: the kind of the largest visible car/truck/pedestrian/cyclist."""
    best, best_area = "none", 0.0
    for a in state.agents:
        if a.kind not in COMMON_CLASSES or a.z <= 3.0 or abs(a.x) / a.z > fov_tan:
            continue
        w, h = SIZES[a.kind]
        area = w * h / (a.z * a.z)
        if area > best_area:
            best, best_area = a.kind, area
    # An object covering a few pixels does not name the scene: call it empty.
    return best if FOCAL * FOCAL * best_area > MIN_LABEL_AREA else "none"
