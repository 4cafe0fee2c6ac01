"""Independent probe of a video file with OpenCV's FFmpeg backend: frame count, size, timestamps;
and the H.264 profile its MP4 `avcC` box declares (ISO/IEC 14496-15), read from the bytes.

Usage: video_probe.py VIDEO  -> prints JSON {"frames", "width", "height", "pts_ms": [...],
"h264_profile_idc"} (66 baseline, 77 main, 100 high; null when there is no avcC box)
"""
import json
import sys

import cv2


def h264_profile_idc(path: str):
    data = open(path, "rb").read()
    at = data.find(b"avcC")
    # After the box type: configurationVersion, then AVCProfileIndication.
    return data[at + 5] if at >= 0 else None


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
    print(json.dumps({"frames": len(pts_ms), "width": size and size[0], "height": size and size[1], "pts_ms": pts_ms,
                      "h264_profile_idc": h264_profile_idc(sys.argv[1])}))


if __name__ == "__main__":
    main()
