"""Independent references for tracking and smoothing.

one-euro IN.json   -> the authors' One Euro filter (`oneeurofilter` on PyPI) over the samples of
                      IN.json {"params": [min_cutoff, beta, d_cutoff], "rate": Hz,
                      "samples": [[t, x], ...]}; prints the filtered values as JSON.
sequences OUT.json -> writes synthetic tracking sequences with known identities: per sequence
                      and frame the true boxes (id, x1, y1, x2, y2), the detections a detector
                      would give (x1, y1, x2, y2, score) and each detection's 17 keypoints (where
                      its person truly is; empty for a false detection): people crossing,
                      occlusion gaps, missed and false detections, jittered boxes. The peer sees
                      the boxes only.
score OUT.json OURS.json -> runs the same detections through ByteTrack as the `trackers` package
                      implements it (the peer, at its defaults, with the timestamps), and scores
                      the peer and OURS.json ({"name": [[[x1, y1, x2, y2, id], ...] per frame]})
                      with motmetrics, the MOTChallenge scorer (IoU >= 0.5 to count as a match);
                      prints {"name": {"ours": {...}, "peer": {...}}} with idf1, id_switches, mota.
"""
import json
import sys

import numpy as np

FPS = 30.0


def one_euro(path: str) -> None:
    from OneEuroFilter import OneEuroFilter

    spec = json.load(open(path))
    min_cutoff, beta, d_cutoff = spec["params"]
    f = OneEuroFilter(spec["rate"], mincutoff=min_cutoff, beta=beta, dcutoff=d_cutoff)
    print(json.dumps([f(x, t) for t, x in spec["samples"]]))


class World:
    """People as boxes (60 x 160 px) moving at constant velocity in a 1280 x 720 frame."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def walk(self, start, velocity, frames):
        start, velocity = np.asarray(start, float), np.asarray(velocity, float)
        return [start + velocity * k for k in range(frames)]

    @staticmethod
    def box(centre, size=(60.0, 160.0)):
        (x, y), (w, h) = centre, size
        return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]


def keypoints_in(box, rng):
    """17 keypoints spread over a person's true box (a fixed body layout, 1 px noise)."""
    x1, y1, x2, y2 = box
    layout = [(0.5, 0.05 + 0.055 * i) if i < 5 else ((0.2, 0.8)[i % 2], 0.1 + 0.07 * i) for i in range(17)]
    return [[x1 + fx * (x2 - x1) + rng.normal(0, 1), y1 + fy * (y2 - y1) + rng.normal(0, 1), 0.9] for fx, fy in layout]


def make_sequence(seed, frames, people, miss=0.0, false_rate=0.0, jitter=2.0, hidden=None, weak=None):
    """people: [(start, velocity)]; hidden: {person: range of frames without detection};
    weak: {person: range of frames whose detection scores 0.2 to 0.45}. Every detection has
    the keypoints of its person."""
    world = World(seed)
    rng = world.rng
    paths = [world.walk(s, v, frames) for s, v in people]
    hidden, weak = hidden or {}, weak or {}
    truth, detections, keypoints = [], [], []
    for k in range(frames):
        gt, dets, points = [], [], []
        for pid, path in enumerate(paths):
            box = World.box(path[k])
            gt.append([pid + 1] + box)
            if k in hidden.get(pid, ()) or rng.random() < miss:
                continue
            noisy = (np.asarray(box) + rng.normal(0, jitter, 4)).tolist()
            score = rng.uniform(0.2, 0.45) if k in weak.get(pid, ()) else rng.uniform(0.65, 0.98)
            dets.append(noisy + [float(score)])
            points.append(keypoints_in(box, rng))
        if rng.random() < false_rate:
            centre = rng.uniform([100, 150], [1180, 570])
            dets.append(World.box(centre) + [float(rng.uniform(0.3, 0.75))])
            points.append([])
        truth.append(gt)
        detections.append(dets)
        keypoints.append(points)
    return {"truth": truth, "detections": detections, "keypoints": keypoints}


def sequences(path: str) -> None:
    out = {
        # Two people walking towards each other and crossing; the one behind is missed, then
        # detected weakly, around the crossing.
        "crossing": make_sequence(
            1, 120, [((200, 360), (8, 0)), ((1080, 370), (-8, 0))],
            hidden={1: range(52, 58)}, weak={1: range(58, 62)},
        ),
        # One person hidden for 0.6 s behind an occluder, another standing still nearby.
        "occlusion_gap": make_sequence(
            2, 120, [((150, 360), (6, 0.5)), ((700, 300), (0, 0))],
            hidden={0: range(50, 68)},
        ),
        # Four people; a tenth of the detections missed and false detections appear.
        "missed_and_false": make_sequence(
            3, 150,
            [((150, 200), (4, 1)), ((1100, 250), (-5, 0.5)), ((400, 520), (3, -1)), ((900, 560), (-2, -1.5))],
            miss=0.1, false_rate=0.15,
        ),
        # Eight people, strong jitter, some weak detections.
        "jittered_crowd": make_sequence(
            4, 150,
            [((100 + 140 * i, 200 + 40 * (i % 3)), ((-1) ** i * 3, 0.5 * (i % 2))) for i in range(8)],
            jitter=5.0, weak={2: range(60, 75), 5: range(90, 100)},
        ),
    }
    json.dump(out, open(path, "w"))


def peer(detections):
    import supervision as sv
    from trackers import ByteTrackTracker

    tracker = ByteTrackTracker()
    frames = []
    for k, dets in enumerate(detections):
        array = np.asarray(dets, dtype=float).reshape(-1, 5)
        result = tracker.update(
            sv.Detections(xyxy=array[:, :4], confidence=array[:, 4]), timestamp=1.0 + k / FPS
        )
        frames.append([box.tolist() + [int(i)] for box, i in zip(result.xyxy, result.tracker_id) if i >= 0])
    return frames


def iou_distances(a, b):
    """1 - IoU, NaN (no match) below IoU 0.5: motmetrics' `iou_matrix(max_iou=0.5)`, which
    itself calls a NumPy function NumPy 2 removed."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda r: np.prod(r[:, 2:] - r[:, :2], axis=1)
    iou = intersection / (area(a)[:, None] + area(b)[None, :] - intersection)
    distances = 1.0 - iou
    distances[iou < 0.5] = np.nan
    return distances


def evaluate(truth, hypotheses):
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for gt, hyp in zip(truth, hypotheses):
        gt_boxes = np.asarray([g[1:] for g in gt], float).reshape(-1, 4)
        hyp_boxes = np.asarray([h[:4] for h in hyp], float).reshape(-1, 4)
        acc.update([g[0] for g in gt], [h[4] for h in hyp], iou_distances(gt_boxes, hyp_boxes))
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota"], name="s")
    row = summary.loc["s"]
    return {"idf1": float(row["idf1"]), "id_switches": int(row["num_switches"]), "mota": float(row["mota"])}


def score(path: str, ours_path: str) -> None:
    data, ours = json.load(open(path)), json.load(open(ours_path))
    table = {
        name: {
            "ours": evaluate(seq["truth"], ours[name]),
            "peer": evaluate(seq["truth"], peer(seq["detections"])),
        }
        for name, seq in data.items()
    }
    print(json.dumps(table))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "one-euro":
        one_euro(sys.argv[2])
    elif mode == "sequences":
        sequences(sys.argv[2])
    elif mode == "score":
        score(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}")
