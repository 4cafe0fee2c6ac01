"""Independent NumPy / OpenCV reference for the depth and normal post-processing
(src/tasks/dense.rs), following the official Sapiens demos (lite/demo/vis_depth.py,
vis_normal.py).

    dense_reference.py resize MAPS.npy OUT_W OUT_H OUT.npy
        MAPS.npy float32 (C, H, W) -> (C, OUT_H, OUT_W): cv2.resize(INTER_LINEAR) per channel.
    dense_reference.py depth DEPTH.npy CLASSES.npy|- NORMALISED.npy COLOURS.npy
        DEPTH.npy float32 (H, W); CLASSES.npy uint8 (H, W) or '-' for no class map.
        Writes the normalised depth, float32 (H, W): (d - min) / (max - min) over the pixels of
        class > 0 (all pixels without a class map), 0 elsewhere, and the inferno colours of every
        pixel, uint8 (H, W, 3) RGB: cv2.applyColorMap(uint8((1 - n) * 255), COLORMAP_INFERNO).
        Prints "min=<v> max=<v>".
    dense_reference.py normals NORMALS.npy UNIT.npy LEVELS.npy
        NORMALS.npy float32 (3, H, W). Writes n / (|n| + 1e-5), float32 (3, H, W), and the
        levels round((n + 1) / 2 * 255) of the unit normals, uint8 (H, W, 3) RGB.
    dense_reference.py read-png PNG OUT.npy
        cv2.imread(IMREAD_UNCHANGED) of an 8-bit PNG, colour ones as RGB, saved as uint8.
    dense_reference.py depth-png PNG SCALE OFFSET OUT.npy
        cv2.imread(IMREAD_UNCHANGED) of a 16-bit grayscale PNG; saves offset + value * scale
        as float32 (H, W).
    dense_reference.py mask CLASSES.npy C1,C2,... OUT.npy
        uint8 (H, W): 255 where the class is one of the given indices, else 0.
    dense_reference.py --bench
        Times the OpenCV equivalents of benches/dense.rs (1920 x 1080 output).
"""

import sys
import time

import cv2
import numpy as np


def resize(maps, out_w, out_h):
    return np.stack(
        [cv2.resize(m, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for m in maps]
    )


def normalise_depth(depth, classes):
    mask = np.ones(depth.shape, dtype=bool) if classes is None else classes > 0
    normalised = np.zeros(depth.shape, dtype=np.float32)
    foreground = depth[mask]
    lo, hi = np.min(foreground), np.max(foreground)
    normalised[mask] = (foreground - lo) / (hi - lo)
    return normalised, lo, hi


def inferno_rgb(normalised):
    levels = ((1 - normalised) * 255.0).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO)[:, :, ::-1]


def unit_normals(normals):
    return normals / (np.linalg.norm(normals, axis=0, keepdims=True) + 1e-5)


def normal_levels(unit):
    return np.round((unit.transpose(1, 2, 0) + 1) / 2 * 255).astype(np.uint8)


def read_png(path, depth):
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        sys.exit(f"{path}: OpenCV cannot read it")
    if image.dtype != depth:
        sys.exit(f"{path}: expected {depth.__name__} samples, got {image.dtype}")
    return image


def bench():
    rng = np.random.default_rng(0)
    depth = rng.standard_normal((1, 1024, 768), dtype=np.float32)
    normals = rng.standard_normal((3, 512, 384), dtype=np.float32)

    def depth_path():
        d = resize(depth, 1920, 1080)[0]
        return inferno_rgb(normalise_depth(d, None)[0])

    def normal_path():
        return normal_levels(unit_normals(resize(normals, 1920, 1080)))

    print(f"opencv_threads={cv2.getNumThreads()}")
    for name, run in [("depth", depth_path), ("normal", normal_path)]:
        run()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
        print(f"opencv_numpy_{name}_to_1920x1080_ms={np.median(times):.2f}")


def main(argv):
    if argv == ["--bench"]:
        bench()
        return
    if not argv:
        sys.exit(__doc__)
    command, args = argv[0], argv[1:]
    if command == "resize" and len(args) == 4:
        maps = np.load(args[0])
        np.save(args[3], resize(maps, int(args[1]), int(args[2])))
    elif command == "depth" and len(args) == 4:
        depth = np.load(args[0])
        classes = None if args[1] == "-" else np.load(args[1])
        normalised, lo, hi = normalise_depth(depth, classes)
        np.save(args[2], normalised)
        np.save(args[3], inferno_rgb(normalised))
        print(f"min={lo!r} max={hi!r}")
    elif command == "normals" and len(args) == 3:
        unit = unit_normals(np.load(args[0]))
        np.save(args[1], unit.astype(np.float32))
        np.save(args[2], normal_levels(unit))
    elif command == "read-png" and len(args) == 2:
        image = read_png(args[0], np.uint8)
        np.save(args[1], image if image.ndim == 2 else image[:, :, ::-1].copy())
    elif command == "depth-png" and len(args) == 4:
        values = read_png(args[0], np.uint16)
        if values.ndim != 2:
            sys.exit(f"{args[0]}: expected a grayscale PNG, got shape {values.shape}")
        scale, offset = float(args[1]), float(args[2])
        np.save(args[3], (offset + values.astype(np.float64) * scale).astype(np.float32))
    elif command == "mask" and len(args) == 3:
        classes = np.load(args[0])
        selected = [int(c) for c in args[1].split(",")]
        np.save(args[2], np.where(np.isin(classes, selected), 255, 0).astype(np.uint8))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
