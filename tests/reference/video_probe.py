"""Independent probe of a video file with OpenCV's FFmpeg backend: frame count, size, timestamps.

Usage: video_probe.py VIDEO  -> prints JSON {"frames", "width", "height", "pts_ms": [...]}
"""
import json
import sys

import cv2


def main() -> None:
    capture = cv2.VideoCapture(sys.argv[1])
    if not capture.isOpened():
        sys.exit(f"cannot open {sys.argv[1]}")
    pts_ms, size = [], None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        pts_ms.append(capture.get(cv2.CAP_PROP_POS_MSEC))
        size = frame.shape[1], frame.shape[0]
    print(json.dumps({"frames": len(pts_ms), "width": size and size[0], "height": size and size[1], "pts_ms": pts_ms}))


if __name__ == "__main__":
    main()
