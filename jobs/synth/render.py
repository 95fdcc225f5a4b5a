"""Draw a FrameState as a front-camera RGB image, in perspective.

A pinhole camera at CAM_HEIGHT looks down the road; world points (x lateral, z ahead) project to
`u = W/2 + f*x/z`, ground row `v = H*HORIZON + f*CAM_HEIGHT/z`. Objects are drawn far to near. Lights
(tail lights, headlights, emergency bars) are painted after the night/fog pass so they stay bright.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edgemine.jobs.synth.world import (
    CAM_HEIGHT,
    FOCAL,
    HORIZON,
    LANE_W,
    SIZES,
    Agent,
    DriveConfig,
    FrameState,
    road_half_width,
)

Color = tuple[int, int, int]
_SKY: dict[str, tuple[Color, Color]] = {
    "day": ((120, 175, 235), (200, 225, 245)),
    "dusk": ((80, 60, 120), (250, 150, 90)),
    "night": ((8, 12, 30), (25, 30, 55)),
}
_BRIGHTNESS = {"day": 1.0, "dusk": 0.7, "night": 0.33}
Z_NEAR, Z_FAR = 2.5, 400.0


class Camera:
    def __init__(self, size: int) -> None:
        self.w = self.h = size
        self.f = FOCAL * size
        self.horizon = HORIZON * size

    def u(self, x: float, z: float) -> float:
        return self.w / 2 + self.f * x / z

    def v(self, z: float, height: float = 0.0) -> float:
        """Image row of a point `height` metres above the ground at depth z."""
        return self.horizon + self.f * (CAM_HEIGHT - height) / z

    def box(self, x: float, z: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Screen rectangle of an upright w x h (metres) object standing at (x, z)."""
        half = self.f * w / (2 * z)
        bottom = self.v(z)
        return (self.u(x, z) - half, bottom - self.f * h / z, self.u(x, z) + half, bottom)

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> list[tuple[float, float]]:
        return [(self.u(x0, z0), self.v(z0)), (self.u(x1, z0), self.v(z0)),
                (self.u(x1, z1), self.v(z1)), (self.u(x0, z1), self.v(z1))]


def _gradient(size: int, top: Color, bottom: Color, rows: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, max(rows, 1))[:, None]
    col = (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)
    return np.repeat(col[:, None, :], size, axis=1)


def _hash01(*keys: int) -> float:
    h = 2166136261
    for k in keys:
        h = ((h ^ (k & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return (h % 10_000) / 10_000.0


class _Lights:
    """Light sources collected while drawing, painted after the global exposure pass."""

    def __init__(self) -> None:
        self.items: list[tuple[float, float, float, Color, bool]] = []

    def add(self, u: float, v: float, r: float, color: Color, *, glow: bool = True) -> None:
        self.items.append((u, v, max(r, 0.5), color, glow))


def _draw_scenery(d: ImageDraw.ImageDraw, cam: Camera, cfg: DriveConfig, st: FrameState, snow: bool) -> None:
    left, right = road_half_width(cfg)
    spacing = {"urban": 11.0, "rural": 16.0, "highway": 25.0}[cfg.road_type]
    phase = st.odometer % spacing
    base = int(st.odometer // spacing)
    for k in range(12, 0, -1):
        z = k * spacing - phase
        if z < Z_NEAR:
            continue
        for side, edge in ((-1, left), (1, right)):
            key = _hash01(base + k, side + 7, zlib.crc32(cfg.drive_id.encode()))
            if cfg.road_type == "urban":
                x0 = edge + side * 3.0
                x1 = x0 + side * 9.0
                height = 6 + 14 * key
                shade = int(90 + 80 * key)
                col = (shade, int(shade * 0.9), int(shade * 0.8)) if not snow else (200, 200, 205)
                xa, xb = sorted((cam.u(x0, z), cam.u(x1, z)))
                d.rectangle((xa, cam.v(z, height), xb, cam.v(z)), fill=col)
                win = (40, 50, 70) if st.speed >= 0 else col
                d.rectangle((xa + (xb - xa) * 0.2, cam.v(z, height * 0.8), xb - (xb - xa) * 0.2,
                             cam.v(z, height * 0.6)), fill=win)
            elif cfg.road_type == "rural":
                if key < 0.35:
                    continue
                x = edge + side * (3 + 6 * key)
                hgt = 4 + 5 * key
                u, top, base_v = cam.u(x, z), cam.v(z, hgt), cam.v(z)
                half = cam.f * 1.6 / z
                trunk = cam.f * 0.25 / z
                d.rectangle((u - trunk, cam.v(z, 1.5), u + trunk, base_v), fill=(80, 55, 30))
                col = (30, int(90 + 60 * key), 35) if not snow else (225, 230, 235)
                d.polygon([(u, top), (u - half, cam.v(z, 1.4)), (u + half, cam.v(z, 1.4))], fill=col)
            else:  # highway: guard-rail posts
                x = edge + side * 0.8
                d.rectangle((cam.u(x, z) - 0.6, cam.v(z, 0.8), cam.u(x, z) + 0.6, cam.v(z)), fill=(150, 150, 150))


def _draw_road(d: ImageDraw.ImageDraw, cam: Camera, cfg: DriveConfig, st: FrameState, snow: bool) -> None:
    left, right = road_half_width(cfg)
    road = (230, 232, 236) if snow else (78, 80, 86)
    d.polygon(cam.ground_quad(left, right, Z_NEAR, Z_FAR), fill=road)
    if cfg.road_type == "urban":
        curb = (215, 215, 220) if snow else (150, 148, 145)
        d.polygon(cam.ground_quad(left - 2.5, left, Z_NEAR, Z_FAR), fill=curb)
        d.polygon(cam.ground_quad(right, right + 2.5, Z_NEAR, Z_FAR), fill=curb)
    if snow:
        return  # lane markings are buried
    mark = (235, 235, 220)
    for edge in (left + 0.1, right - 0.1):
        d.polygon(cam.ground_quad(edge - 0.08, edge + 0.08, Z_NEAR, Z_FAR), fill=mark)
    phase = st.odometer % 10.0
    for lane in range(1, cfg.lanes):
        x = left + lane * LANE_W
        for k in range(0, 16):
            z0 = k * 10.0 - phase
            z1 = z0 + 3.0
            if z1 < Z_NEAR:
                continue
            d.polygon(cam.ground_quad(x - 0.07, x + 0.07, max(z0, Z_NEAR), z1), fill=mark)


def _shade(c: Color, k: float) -> Color:
    return (int(min(255, c[0] * k)), int(min(255, c[1] * k)), int(min(255, c[2] * k)))


def _draw_vehicle_rear(d: ImageDraw.ImageDraw, cam: Camera, a: Agent, lights: _Lights, *, dark: bool) -> None:
    w, h = SIZES[a.kind]
    x0, y0, x1, y1 = cam.box(a.x, a.z, w, h)
    d.rectangle((x0, y0, x1, y1), fill=a.color)
    if a.kind == "car":
        d.rectangle((x0 + (x1 - x0) * 0.12, y0 + (y1 - y0) * 0.08, x1 - (x1 - x0) * 0.12, y0 + (y1 - y0) * 0.42),
                    fill=_shade(a.color, 0.35))
    else:
        d.rectangle((x0, y1 - (y1 - y0) * 0.15, x1, y1), fill=(35, 35, 35))
    wheel = max(1.0, (x1 - x0) * 0.16)
    d.rectangle((x0, y1 - wheel * 0.6, x0 + wheel, y1 + wheel * 0.4), fill=(20, 20, 20))
    d.rectangle((x1 - wheel, y1 - wheel * 0.6, x1, y1 + wheel * 0.4), fill=(20, 20, 20))
    r = (x1 - x0) * 0.07
    if dark or r >= 1.0:  # tail lights: a glow at night, small red lamps by day, invisible far away by day
        tail = (255, 40, 30) if dark else (200, 30, 25)
        lights.add(x0 + r * 1.5, y1 - (y1 - y0) * 0.3, r, tail, glow=dark)
        lights.add(x1 - r * 1.5, y1 - (y1 - y0) * 0.3, r, tail, glow=dark)


def _draw_person(d: ImageDraw.ImageDraw, cam: Camera, a: Agent, *, scale: float = 1.0,
                 colors: tuple[Color, Color] | None = None) -> None:
    w, h = SIZES["pedestrian"]
    x0, y0, x1, y1 = cam.box(a.x, a.z, w * scale, h * scale)
    head = (x1 - x0) * 0.45
    body, legs = colors or (a.color, _shade(a.color, 0.6))
    cx = (x0 + x1) / 2
    d.ellipse((cx - head, y0, cx + head, y0 + 2 * head), fill=(225, 185, 150))
    d.rectangle((x0, y0 + 2 * head, x1, y0 + (y1 - y0) * 0.58), fill=body)
    d.rectangle((x0 + (x1 - x0) * 0.1, y0 + (y1 - y0) * 0.58, x1 - (x1 - x0) * 0.1, y1), fill=legs)


def _draw_cyclist(d: ImageDraw.ImageDraw, cam: Camera, a: Agent) -> None:
    x0, y0, x1, y1 = cam.box(a.x, a.z, 0.6, 1.7)
    r = (y1 - y0) * 0.18
    cx = (x0 + x1) / 2
    d.ellipse((cx - r, y1 - 2 * r, cx + r, y1), outline=(20, 20, 20), width=max(1, int(r * 0.4)))
    d.rectangle((x0 + (x1 - x0) * 0.2, y0 + (y1 - y0) * 0.2, x1 - (x1 - x0) * 0.2, y1 - 2 * r), fill=a.color)
    d.ellipse((cx - (x1 - x0) * 0.3, y0, cx + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.22), fill=(230, 200, 40))


def _draw_sign(d: ImageDraw.ImageDraw, cam: Camera, a: Agent) -> None:
    x0, y0, x1, y1 = cam.box(a.x, a.z, SIZES["sign"][0], SIZES["sign"][1])
    cx = (x0 + x1) / 2
    pole = max(0.5, (x1 - x0) * 0.06)
    d.rectangle((cx - pole, y0, cx + pole, y1), fill=(120, 120, 125))
    panel = y0 + (x1 - x0)
    if a.color[0] > 150:
        d.ellipse((x0, y0, x1, panel), fill=a.color, outline=(240, 240, 240))
    else:
        d.rectangle((x0, y0, x1, panel), fill=a.color, outline=(240, 240, 240))


# ------------------------------------------------------------------ rare events
def _event_z(progress: float, start: float = 24.0, stop: float = 6.0) -> float:
    return start + (stop - start) * progress


def _draw_event(d: ImageDraw.ImageDraw, cam: Camera, st: FrameState, lights: _Lights) -> None:
    ev = st.event
    if ev is None:
        return
    p = st.event_progress
    z = _event_z(p)
    rnd = np.random.default_rng(zlib.crc32(ev.event_id.encode()))
    cat = ev.category
    if cat == "construction_zone":
        for k in range(6):
            zc = z + k * 2.5
            xc = -1.4 + k * 0.55
            x0, y0, x1, y1 = cam.box(xc, zc, 0.7, 1.1)
            cx = (x0 + x1) / 2
            d.polygon([(cx, y0), (x0, y1), (x1, y1)], fill=(255, 120, 0))
            d.rectangle((x0 + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.45, x1 - (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.6),
                        fill=(250, 250, 250))
        bx0, by0, bx1, by1 = cam.box(1.0, z + 4, 3.2, 1.8)
        stripes = 6
        for s in range(stripes):
            xa = bx0 + (bx1 - bx0) * s / stripes
            d.rectangle((xa, by0, xa + (bx1 - bx0) / stripes, by0 + (by1 - by0) * 0.5),
                        fill=(255, 110, 0) if s % 2 == 0 else (245, 245, 245))
    elif cat == "animal_on_road":
        x = -4.0 + 8.0 * p
        x0, y0, x1, y1 = cam.box(x, z, 2.3, 1.9)  # moose-sized
        body = (120, 75, 35)
        d.ellipse((x0, y0 + (y1 - y0) * 0.15, x1, y0 + (y1 - y0) * 0.6), fill=body)
        for t in (0.15, 0.35, 0.65, 0.85):
            lx = x0 + (x1 - x0) * t
            d.line((lx, y0 + (y1 - y0) * 0.5, lx, y1), fill=body, width=max(1, int((x1 - x0) * 0.06)))
        hx = x1 if p < 1 else x0
        d.ellipse((hx - (x1 - x0) * 0.18, y0 - (y1 - y0) * 0.1, hx + (x1 - x0) * 0.12, y0 + (y1 - y0) * 0.25),
                  fill=(100, 60, 25))
        r = max(0.7, (x1 - x0) * 0.04)
        lights.add(hx, y0 + (y1 - y0) * 0.05, r, (255, 255, 180))  # eye shine
    elif cat == "overturned_vehicle":  # on its side across the lane: the underbody faces the camera
        x0, y0, x1, y1 = cam.box(0.3, z, 4.2, 1.7)
        w, h = x1 - x0, y1 - y0
        d.polygon([(x0, y0 + h * 0.15), (x1, y0), (x1, y1), (x0, y1)], fill=(138, 104, 74))  # rusty underbody
        d.line((x0 + w * 0.2, y0 + h * 0.55, x1 - w * 0.1, y0 + h * 0.5), fill=(60, 58, 55),
               width=max(1, int(h * 0.1)))  # exhaust and driveshaft
        for t in (0.12, 0.88):  # two wheels facing us, hubs showing
            wx, r = x0 + w * t, h * 0.3
            d.ellipse((wx - r, y0 + h * 0.5 - r, wx + r, y0 + h * 0.5 + r), fill=(18, 18, 18))
            d.ellipse((wx - r * 0.4, y0 + h * 0.5 - r * 0.4, wx + r * 0.4, y0 + h * 0.5 + r * 0.4),
                      fill=(170, 170, 175))
        sx0, sy0, sx1, sy1 = cam.box(0.0, z - 1.5, 5.0, 0.3)  # fluid spill on the road
        d.ellipse((sx0, sy1 - (sy1 - sy0) * 0.8, sx1, sy1 + (sy1 - sy0) * 0.6), fill=(28, 26, 30))
        for _ in range(8):  # glass on the road
            gx = x0 + w * rnd.uniform(-0.3, 1.3)
            d.point((gx, y1 + rnd.uniform(0, 3)), fill=(210, 230, 240))
    elif cat == "unusual_pedestrian":
        a = Agent("pedestrian", 0.4 - 0.8 * p, z * 0.8, 0.0, (255, 0, 200), 0)
        _draw_person(d, cam, a, scale=1.35, colors=((255, 0, 200), (255, 230, 0)))
        x0, y0, x1, y1 = cam.box(a.x, a.z, 0.55 * 1.35, 1.75 * 1.35)
        d.line((x0 - (x1 - x0) * 0.9, y0 + (y1 - y0) * 0.3, x1 + (x1 - x0) * 0.9, y0 + (y1 - y0) * 0.3),
               fill=(0, 230, 230), width=max(1, int((x1 - x0) * 0.25)))
    elif cat == "emergency_vehicle":
        x0, y0, x1, y1 = cam.box(0.0, z, 2.1, 2.4)
        d.rectangle((x0, y0, x1, y1), fill=(240, 240, 240))
        d.rectangle((x0, y0 + (y1 - y0) * 0.55, x1, y0 + (y1 - y0) * 0.7), fill=(220, 20, 20))
        on = st.index % 2 == 0
        r = max(1.0, (x1 - x0) * 0.18)
        lights.add(x0 + r, y0 - r * 0.3, r * 1.6, (255, 20, 20) if on else (40, 60, 255))
        lights.add(x1 - r, y0 - r * 0.3, r * 1.6, (40, 60, 255) if on else (255, 20, 20))
    elif cat == "debris":  # a lost load: planks, boxes and a tyre across the lanes
        for _ in range(12):
            zc = z + rnd.uniform(-2, 8)
            xc = rnd.uniform(-2.5, 2.5)
            size = rnd.uniform(0.4, 1.1)
            pts = [(cam.u(xc + size * np.cos(t) * rnd.uniform(0.5, 1.2), zc),
                    cam.v(zc) - cam.f * size * 0.5 * (np.sin(t) + 1) / zc)
                   for t in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
            col = (int(rnd.integers(140, 200)), int(rnd.integers(95, 140)), int(rnd.integers(40, 80)))
            d.polygon(pts, fill=col)
        tx0, ty0, tx1, ty1 = cam.box(-0.8, z + 2, 0.8, 0.8)
        d.ellipse((tx0, ty0, tx1, ty1), outline=(15, 15, 15), width=max(1, int((tx1 - tx0) * 0.3)))
    elif cat == "wrong_way_vehicle":
        zc = _event_z(p, 60.0, 6.0)
        x0, y0, x1, y1 = cam.box(0.1, zc, 1.8, 1.45)
        d.rectangle((x0, y0, x1, y1), fill=(50, 55, 60))
        d.rectangle((x0 + (x1 - x0) * 0.1, y0 + (y1 - y0) * 0.1, x1 - (x1 - x0) * 0.1, y0 + (y1 - y0) * 0.45),
                    fill=(120, 160, 190))
        d.rectangle((x0 + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.6, x1 - (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.8),
                    fill=(20, 20, 20))
        r = max(1.0, (x1 - x0) * 0.13)
        lights.add(x0 + r * 1.3, y0 + (y1 - y0) * 0.65, r * 1.4, (255, 255, 225))
        lights.add(x1 - r * 1.3, y0 + (y1 - y0) * 0.65, r * 1.4, (255, 255, 225))


# ------------------------------------------------------------------ whole frame
def render_frame(cfg: DriveConfig, st: FrameState, size: int) -> Image.Image:
    """Render one frame; deterministic for a given (cfg, state, size)."""
    cam = Camera(size)
    cat = st.event.category if st.event is not None else None
    snow = cat == "snow_covered_road"
    hz = int(round(cam.horizon))
    arr = np.empty((size, size, 3), float)
    top, bottom = _SKY[cfg.time_of_day]
    if snow:
        top, bottom = (170, 175, 185), (215, 218, 225)
    arr[:hz] = _gradient(size, top, bottom, hz)
    ground = {"urban": (105, 102, 98), "rural": (70, 115, 50), "highway": (115, 120, 85)}[cfg.road_type]
    arr[hz:] = (235, 238, 242) if snow else ground
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)
    lights = _Lights()
    _draw_scenery(d, cam, cfg, st, snow)
    _draw_road(d, cam, cfg, st, snow)
    for a in sorted(st.agents, key=lambda a: -a.z):
        if a.z <= Z_NEAR or abs(cam.u(a.x, a.z) - size / 2) > size:
            continue
        if a.kind in ("car", "truck"):
            _draw_vehicle_rear(d, cam, a, lights, dark=cfg.time_of_day != "day" or cfg.weather == "fog")
        elif a.kind == "pedestrian":
            _draw_person(d, cam, a)
        elif a.kind == "cyclist":
            _draw_cyclist(d, cam, a)
        elif a.kind == "sign":
            _draw_sign(d, cam, a)
    if st.event is not None and cat not in ("snow_covered_road", "tunnel_exit_glare"):
        _draw_event(d, cam, st, lights)

    rng = np.random.default_rng(st.noise_seed)
    if cfg.weather == "rain" or snow:
        streak = (200, 205, 215) if not snow else (250, 250, 255)
        for _ in range(size // 3):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            if snow:
                d.point((x, y), fill=streak)
            else:
                d.line((x, y, x - 1, y + size * 0.06), fill=streak, width=1)

    out: np.ndarray = np.asarray(img, dtype=np.float32)
    out *= _BRIGHTNESS[cfg.time_of_day]
    if cfg.time_of_day == "night":  # headlight pool on the road ahead
        yy, xx = np.mgrid[0:size, 0:size]
        pool = np.exp(-(((xx - size / 2) / (size * 0.28)) ** 2 + ((yy - size * 0.85) / (size * 0.18)) ** 2))
        out *= (1 + 1.6 * pool)[..., None]
    if cfg.weather == "fog":
        rows = np.linspace(0, 1, size)[:, None, None]
        alpha = 0.6 - 0.35 * np.clip((rows * size - hz) / (size - hz), 0, 1)
        alpha[:hz] = 0.6
        out = out * (1 - alpha) + np.float32(170 * _BRIGHTNESS[cfg.time_of_day] + 40) * alpha
    if cat == "tunnel_exit_glare":
        out = _tunnel_exit(out, st.event_progress, size, hz)
    out += rng.normal(0, 2.0, out.shape).astype(np.float32)
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))

    if lights.items:
        glow = Image.new("RGB", (size, size))
        gd = ImageDraw.Draw(glow)
        for u, v, r, col, glows in lights.items:
            if glows:
                gd.ellipse((u - r * 2, v - r * 2, u + r * 2, v + r * 2), fill=_shade(col, 0.5))
        glow = glow.filter(ImageFilter.GaussianBlur(radius=1.2))
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + np.asarray(glow, np.int16), 0, 255).astype(np.uint8))
        ld = ImageDraw.Draw(img)
        for u, v, r, col, _ in lights.items:
            ld.ellipse((u - r, v - r, u + r, v + r), fill=col)
    return img


def _tunnel_exit(out: np.ndarray, progress: float, size: int, hz: int) -> np.ndarray:
    """Dark tunnel walls around a blown-out opening that grows as the ego approaches the exit."""
    yy, xx = np.mgrid[0:size, 0:size]
    radius = size * (0.12 + 0.45 * progress)
    dist = np.sqrt(((xx - size / 2) / 1.3) ** 2 + (yy - hz) ** 2)
    inside = np.clip((radius - dist) / (size * 0.05), 0, 1)[..., None]
    bright = np.minimum(255.0, out * 1.8 + 120.0)
    walls = np.full_like(out, 22.0) + out * 0.08
    bloom = np.exp(-(dist / (radius * 1.6)) ** 2)[..., None] * 90.0
    return walls * (1 - inside) + bright * inside + bloom
