#!/usr/bin/env python3
"""NumPy / OpenCV reference for the Sapiens2 pre- and post-processing, written from the official
test pipeline and demos (facebookresearch/sapiens2: NormalResizePadImage and
PointmapResizePadImage in sapiens/dense/src/datasets/transforms, ImagePreprocessor, and
tools/vis/vis_normal.py, vis_pointmap.py), independently of the Rust code.

  sapiens2_reference.py pad FRAME W H OUT.npy
      FRAME: an HxWx3 uint8 RGB .npy or a PNG. OUT: the (3, 1024, 768) model input: scale =
      min(768 / w, 1024 / h), size int(w * scale) x int(h * scale), cv2.resize INTER_LINEAR,
      np.pad with 0 centred (the floor of half before), then (x - mean) / std. Prints the padding
      as {"left", "right", "top", "bottom"}. (W and H are the frame's, for PNG-less callers.)
  sapiens2_reference.py normals RAW.npy W H OUT.npy
      RAW: a (3, 1024, 768) normal output for a W x H frame (or (1, 3, 1024, 768)). OUT: (3, H, W):
      n / max(|n|, 1e-8), the padding cropped, then bilinear (align_corners=False) to H x W.
  sapiens2_reference.py pointmap RAW.npy W H OUT.npy
      RAW: a (4, 1024, 768) pointmap output (x, y, z, scale plane) for a W x H frame. OUT:
      (3, H, W) metric points: map / scale, the padding cropped, bilinear to H x W. Prints
      {"scale", "focal_length_px"}: 768 / scale in input pixels, over the resize factor.
"""

import json
import sys

import cv2
import numpy as np

INPUT_H, INPUT_W = 1024, 768
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def padding(w, h):
    """NormalResizePadImage: the resized size and the (left, right, top, bottom) padding."""
    scale = min(INPUT_W / w, INPUT_H / h)
    new_w, new_h = int(w * scale), int(h * scale)
    pad_w, pad_h = INPUT_W - new_w, INPUT_H - new_h
    left, top = pad_w // 2, pad_h // 2
    return scale, (new_w, new_h), (left, pad_w - left, top, pad_h - top)


def pad(frame):
    h, w = frame.shape[:2]
    _, (new_w, new_h), (left, right, top, bottom) = padding(w, h)
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = np.pad(resized, ((top, bottom), (left, right), (0, 0)), mode="constant", constant_values=0)
    normalised = (padded.astype(np.float32) - MEAN) / STD
    return normalised.transpose(2, 0, 1), dict(left=left, right=right, top=top, bottom=bottom)


def bilinear(maps, out_h, out_w):
    """F.interpolate(mode="bilinear", align_corners=False): half-pixel centres, edges clamped."""
    _, in_h, in_w = maps.shape

    def taps(out_len, in_len):
        x = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
        x = np.clip(x, 0, None)
        lo = np.minimum(np.floor(x).astype(np.int64), in_len - 1)
        hi = np.minimum(lo + 1, in_len - 1)
        return lo, hi, (x - lo)[None]

    y_lo, y_hi, wy = taps(out_h, in_h)
    x_lo, x_hi, wx = taps(out_w, in_w)
    maps = maps.astype(np.float64)
    rows = maps[:, y_lo] * (1 - wy.T) + maps[:, y_hi] * wy.T
    return (rows[:, :, x_lo] * (1 - wx) + rows[:, :, x_hi] * wx).astype(np.float32)


def crop(maps, w, h):
    _, _, (left, right, top, bottom) = padding(w, h)
    return maps[:, top : INPUT_H - bottom, left : INPUT_W - right]


def normals(raw, w, h):
    length = np.sqrt((raw.astype(np.float64) ** 2).sum(axis=0, keepdims=True))
    unit = raw / np.maximum(length, 1e-8)
    return bilinear(crop(unit, w, h), h, w)


def pointmap(raw, w, h):
    scale = float(raw[3].flat[0])
    metric = raw[:3].astype(np.float64) / scale
    resize, _, _ = padding(w, h)
    focal = INPUT_W / scale / resize
    return bilinear(crop(metric, w, h), h, w), dict(scale=scale, focal_length_px=focal)


def load_frame(path):
    if path.endswith(".npy"):
        return np.load(path)
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main():
    command, source, width, height, out = sys.argv[1:6]
    w, h = int(width), int(height)
    if command == "pad":
        frame = load_frame(source)
        assert frame.shape[:2] == (h, w), f"frame {frame.shape} is not {w} x {h}"
        result, printed = pad(frame)
    else:
        raw = np.load(source)
        raw = raw[0] if raw.ndim == 4 else raw
        if command == "normals":
            result, printed = normals(raw, w, h), {}
        else:
            result, printed = pointmap(raw, w, h)
    np.save(out, np.ascontiguousarray(result, dtype=np.float32))
    print(json.dumps(printed))


if __name__ == "__main__":
    main()
