#!/usr/bin/env python3
"""OpenCV reference for src/preprocess.rs (the Sapiens input contract, docs/SAPIENS.md).

  preprocess_reference.py stretch IMAGE.npy W H OUT.npy
      cv2.resize INTER_LINEAR of the HxWx3 uint8 RGB image to W x H; OUT is (3, H, W) float32.
  preprocess_reference.py crop IMAGE.npy x1 y1 x2 y2 W H OUT.npy
      person box -> centre, scale * 1.25 -> aspect fix -> UDP matrix -> cv2.warpAffine
      INTER_LINEAR, BORDER_CONSTANT 0; OUT is (3, H, W) float32.
  preprocess_reference.py --bench
      median of 20 runs of cv2.resize(1920x1080 RGB -> 768x1024) + (x - mean) / std + planar
      float32; prints opencv_resize_normalise_ms=<value>.

Outputs are not normalised (0..255), so they compare with Normalization::IDENTITY.
"""

import sys
import time

import cv2
import numpy as np

SAPIENS_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAPIENS_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def planar(image):
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)


def stretch(image, width, height):
    return planar(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))


def pose_crop(x1, y1, x2, y2, width, height):
    """Box -> centre and size (docs/SAPIENS.md pose step 2), in float32 like the official codec."""
    box = np.array([x1, y1, x2, y2], dtype=np.float32)
    center = (box[:2] + box[2:]) * np.float32(0.5)
    w, h = (box[2:] - box[:2]) * np.float32(1.25)
    aspect = np.float32(width) / np.float32(height)
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return float(center[0]), float(center[1]), float(w), float(h)


def udp_matrix(cx, cy, w, h, width, height):
    """docs/SAPIENS.md pose step 3, in float64."""
    sx = (width - 1) / w
    sy = (height - 1) / h
    return np.array([[sx, 0.0, sx * (w / 2 - cx)], [0.0, sy, sy * (h / 2 - cy)]], dtype=np.float64)


def crop(image, x1, y1, x2, y2, width, height):
    matrix = udp_matrix(*pose_crop(x1, y1, x2, y2, width, height), width, height)
    warped = cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return planar(warped)


def load_rgb(path):
    image = np.load(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        sys.exit(f"{path}: expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def bench():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        resized = cv2.resize(frame, (768, 1024), interpolation=cv2.INTER_LINEAR)
        normalised = (resized.astype(np.float32) - SAPIENS_MEAN) / SAPIENS_STD
        np.ascontiguousarray(normalised.transpose(2, 0, 1))
        times.append(time.perf_counter() - start)
    print(f"opencv_resize_normalise_ms={np.median(times) * 1e3:.3f}")


def main(argv):
    if argv == ["--bench"]:
        bench()
    elif len(argv) == 5 and argv[0] == "stretch":
        _, image, width, height, out = argv
        np.save(out, stretch(load_rgb(image), int(width), int(height)))
    elif len(argv) == 9 and argv[0] == "crop":
        _, image, x1, y1, x2, y2, width, height, out = argv
        box = [float(v) for v in (x1, y1, x2, y2)]
        np.save(out, crop(load_rgb(image), *box, int(width), int(height)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
