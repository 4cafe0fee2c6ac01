"""Independent OpenCV reference for the segmentation post-processing (src/tasks/seg.rs).

    seg_reference.py LOGITS.npy OUT_W OUT_H OUT.npy [--nearest]
        LOGITS.npy: float32 (C, H, W). Writes the uint8 (OUT_H, OUT_W) class map:
        default: cv2.resize(INTER_LINEAR) of every class map, then np.argmax over classes;
        --nearest: np.argmax at the input resolution, then cv2.resize(INTER_NEAREST).
    seg_reference.py --bench
        Times the default path for 28 x 512 x 384 -> 1920 x 1080 and prints
        opencv_seg_upsample_argmax_ms=<median ms>.
"""

import sys
import time

import cv2
import numpy as np


def upsample_argmax(logits, out_w, out_h):
    resized = np.stack(
        [cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for m in logits]
    )
    return np.argmax(resized, axis=0).astype(np.uint8)


def argmax_nearest(logits, out_w, out_h):
    low_res = np.argmax(logits, axis=0).astype(np.uint8)
    return cv2.resize(low_res, (out_w, out_h), interpolation=cv2.INTER_NEAREST)


def bench():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((28, 512, 384), dtype=np.float32)
    upsample_argmax(logits, 1920, 1080)  # warm-up
    times = []
    for _ in range(10):
        start = time.perf_counter()
        upsample_argmax(logits, 1920, 1080)
        times.append((time.perf_counter() - start) * 1e3)
    print(f"opencv_threads={cv2.getNumThreads()}")
    print(f"opencv_seg_upsample_argmax_ms={np.median(times):.2f}")


def main(argv):
    if argv == ["--bench"]:
        bench()
        return
    nearest = "--nearest" in argv
    args = [a for a in argv if a != "--nearest"]
    if len(args) != 4:
        sys.exit(__doc__)
    logits_path, out_w, out_h, out_path = args[0], int(args[1]), int(args[2]), args[3]
    logits = np.load(logits_path)
    if logits.dtype != np.float32 or logits.ndim != 3:
        sys.exit(f"{logits_path}: expected float32 (C, H, W), got {logits.dtype} {logits.shape}")
    run = argmax_nearest if nearest else upsample_argmax
    np.save(out_path, run(logits, out_w, out_h))


if __name__ == "__main__":
    main(sys.argv[1:])
