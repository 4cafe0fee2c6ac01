#!/usr/bin/env python3
"""OpenCV reference for the detector input of src/tasks/detect.rs.

  letterbox_reference.py IMAGE.npy LAYOUT W H OUT.npy
      IMAGE is an HxWx3 uint8 RGB frame, LAYOUT 'rtmdet' or 'yolo', W x H the model input.
      OUT is the (3, H, W) float32 model input as the layout's own pipeline makes it; prints
      {"std": [...]}: the divisor of each output plane, to compare on the 0..255 scale.

rtmdet: mmdet's test pipeline. mmcv.imrescale (scale min(W/w, H/h), sizes int(x + 0.5)),
        cv2.resize INTER_LINEAR of the BGR image, mmcv.impad to W x H at the bottom/right with
        114, then (x - mean) / std with mean [103.53, 116.28, 123.675], std [57.375, 57.12, 58.395].
yolo:   ultralytics' LetterBox (auto=False, center=True, scaleup=True): sizes round(x * r),
        padding round(d / 2 - 0.1) before and round(d / 2 + 0.1) after via cv2.copyMakeBorder
        with 114, RGB, x / 255.
"""

import json
import sys

import cv2
import numpy as np

PAD = (114, 114, 114)
RTMDET_MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)
RTMDET_STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def rtmdet(rgb, width, height):
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(resized, 0, height - new_h, 0, width - new_w, cv2.BORDER_CONSTANT, value=PAD)
    normalised = (padded.astype(np.float32) - RTMDET_MEAN) / RTMDET_STD
    return normalised.transpose(2, 0, 1), RTMDET_STD.tolist()


def yolo(rgb, width, height):
    h, w = rgb.shape[:2]
    r = min(height / h, width / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    image = rgb
    if (w, h) != (new_w, new_h):
        image = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD)
    return padded.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0), [255.0] * 3


def main():
    image_path, layout, width, height, out_path = sys.argv[1:6]
    rgb = np.load(image_path)
    tensor, std = {"rtmdet": rtmdet, "yolo": yolo}[layout](rgb, int(width), int(height))
    np.save(out_path, np.ascontiguousarray(tensor, dtype=np.float32))
    print(json.dumps({"std": std}))


if __name__ == "__main__":
    main()
