#!/usr/bin/env python3
"""Independent NumPy + OpenCV reference for the DARK-UDP pose heatmap decode.

Mirrors mmpose's ``UDPHeatmap.decode`` (``get_heatmap_maximum`` then
``refine_keypoints_dark_udp`` with ``gaussian_blur``), mmpose/codecs/utils, for one person.

Two deliberate departures, where mmpose's output is meaningless:
* invalid keypoints (score <= 0) are reported at (-1, -1); mmpose marks them so, then runs
  the Newton step on them anyway (its flat indices wrap into the neighbouring channel);
* where the blurred map has no positive value or the Hessian is singular, the integer
  maximum is kept (mmpose would divide by zero or raise LinAlgError for the whole batch).

Usage:
    decode_reference.py HEATMAPS.npy OUT.npy   # (K, H, W) float32 -> (K, 3) float32 [x, y, score]
    decode_reference.py --bench                # times 308 heatmaps of 256 x 192
"""

import sys
import time

import cv2
import numpy as np

BLUR_KERNEL = 11


def get_heatmap_maximum(heatmaps):
    """mmpose get_heatmap_maximum for (K, H, W)."""
    K, H, W = heatmaps.shape
    heatmaps_flatten = heatmaps.reshape(K, -1)
    y_locs, x_locs = np.unravel_index(np.argmax(heatmaps_flatten, axis=1), shape=(H, W))
    locs = np.stack((x_locs, y_locs), axis=-1).astype(np.float32)
    vals = np.amax(heatmaps_flatten, axis=1)
    locs[vals <= 0.0] = -1
    return locs, vals


def gaussian_blur(heatmaps, kernel=BLUR_KERNEL):
    """mmpose gaussian_blur (in place); also returns each blurred map's maximum."""
    assert kernel % 2 == 1
    border = (kernel - 1) // 2
    K, H, W = heatmaps.shape
    blurred_max = np.empty(K, dtype=np.float32)
    for k in range(K):
        origin_max = np.max(heatmaps[k])
        dr = np.zeros((H + 2 * border, W + 2 * border), dtype=np.float32)
        dr[border:-border, border:-border] = heatmaps[k].copy()
        dr = cv2.GaussianBlur(dr, (kernel, kernel), 0)
        heatmaps[k] = dr[border:-border, border:-border].copy()
        blurred_max[k] = np.max(heatmaps[k])
        heatmaps[k] *= origin_max / blurred_max[k]
    return heatmaps, blurred_max


def refine_keypoints_dark_udp(keypoints, heatmaps, blur_kernel_size):
    """mmpose refine_keypoints_dark_udp; keypoints (N, K, 2). Returns keypoints and a mask of
    the keypoints whose step is undefined."""
    N, K = keypoints.shape[:2]
    H, W = heatmaps.shape[1:]

    heatmaps, blurred_max = gaussian_blur(heatmaps, blur_kernel_size)
    np.clip(heatmaps, 1e-3, 50.0, heatmaps)
    np.log(heatmaps, heatmaps)

    heatmaps_pad = np.pad(heatmaps, ((0, 0), (1, 1), (1, 1)), mode="edge").flatten()

    undefined = np.zeros((N, K), dtype=bool)
    for n in range(N):
        index = keypoints[n, :, 0] + 1 + (keypoints[n, :, 1] + 1) * (W + 2)
        index += (W + 2) * (H + 2) * np.arange(0, K)
        index = index.astype(int).reshape(-1, 1)
        i_ = heatmaps_pad[index]
        ix1 = heatmaps_pad[index + 1]
        iy1 = heatmaps_pad[index + W + 2]
        ix1y1 = heatmaps_pad[index + W + 3]
        ix1_y1_ = heatmaps_pad[index - W - 3]
        ix1_ = heatmaps_pad[index - 1]
        iy1_ = heatmaps_pad[index - 2 - W]

        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        derivative = np.concatenate([dx, dy], axis=1)
        derivative = derivative.reshape(K, 2, 1)

        dxx = ix1 - 2 * i_ + ix1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        dyy = iy1 - 2 * i_ + iy1_
        hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1)
        hessian = hessian.reshape(K, 2, 2)
        hessian = hessian + np.finfo(np.float32).eps * np.eye(2)
        # Departure: keep singular ones out of the batched inverse (see module doc).
        singular = ~np.isfinite(hessian).all(axis=(1, 2)) | (np.linalg.det(hessian) == 0)
        hessian[singular] = np.eye(2)
        hessian = np.linalg.inv(hessian)
        keypoints[n] -= np.einsum("imn,ink->imk", hessian, derivative).squeeze(-1)
        undefined[n] = singular | ~(blurred_max > 0)

    return keypoints, undefined


def decode(heatmaps):
    """(K, H, W) float32 -> (K, 3) float32 [x, y, score], like UDPHeatmap.decode before the
    rescale to input pixels."""
    heatmaps = heatmaps.copy()
    keypoints, scores = get_heatmap_maximum(heatmaps)
    integer = keypoints.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        refined, undefined = refine_keypoints_dark_udp(keypoints[None], heatmaps, BLUR_KERNEL)
    refined = refined[0]
    undefined = undefined[0] | ~np.isfinite(refined).all(axis=1)
    refined[undefined] = integer[undefined]
    refined[scores <= 0] = -1
    return np.concatenate([refined, scores[:, None]], axis=1).astype(np.float32)


def bench_heatmaps(k=308, h=256, w=192, seed=0):
    """One sigma-2 Gaussian peak per channel plus low noise, like real model output."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = rng.uniform(5, w - 5, size=(k, 1, 1)).astype(np.float32)
    cy = rng.uniform(5, h - 5, size=(k, 1, 1)).astype(np.float32)
    amplitude = rng.uniform(0.3, 1.0, size=(k, 1, 1)).astype(np.float32)
    peaks = amplitude * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2))
    noise = rng.normal(0.0, 0.01, size=(k, h, w)).astype(np.float32)
    return (peaks + noise).astype(np.float32)


def bench(runs=9):
    heatmaps = bench_heatmaps()
    decode(heatmaps)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        decode(heatmaps)
        times.append(time.perf_counter() - start)
    print(f"numpy_dark_udp_308_ms={np.median(times) * 1e3:.2f}")


def main(argv):
    if argv[1:] == ["--bench"]:
        bench()
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    heatmaps = np.load(argv[1])
    if heatmaps.ndim != 3 or heatmaps.dtype != np.float32:
        print(f"expected (K, H, W) float32, got {heatmaps.shape} {heatmaps.dtype}", file=sys.stderr)
        return 2
    np.save(argv[2], decode(heatmaps))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
