from __future__ import annotations

import pandas as pd

from edgemine.mining.evidence import context_frames


def test_context_frames_come_from_the_same_drive_around_the_candidate() -> None:
    t = [0, 100_000, 400_000, 500_000, 600_000, 1_000_000, 1_600_000]
    frames = pd.DataFrame({"drive_id": "A", "ts_us": t, "frame_id": [f"a{i}" for i in range(7)],
                           "uri": [f"/a/{i}.png" for i in range(7)]})
    frames = pd.concat([frames, pd.DataFrame({"drive_id": ["B"], "ts_us": [500_000], "frame_id": ["b0"],
                                              "uri": ["/b/0.png"]})])
    cands = pd.DataFrame({"drive_id": ["A", "B"], "ts_us": [500_000, 500_000], "frame_id": ["a3", "b0"]})
    out, offsets = context_frames(cands, frames, offsets_s=(-1.0, -0.5, 0.5, 1.0), tolerance_s=0.15)
    # -1 s: nothing within 0.15 s of -0.5 s; -0.5 s -> 0 s; +0.5 s -> 1.0 s; +1 s -> 1.6 s is 0.1 s off
    assert out[0] == ["/a/0.png", "/a/5.png", "/a/6.png"]
    assert out[1] == []
    assert offsets == [[-0.5, 0.5, 1.1], []]  # the frames' true offsets, not the ones asked for
