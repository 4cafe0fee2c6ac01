"""OpenCV's YUV 4:2:0 -> RGB conversion, the reference for the CUDA preprocess's colour step.

Usage: yuv_reference.py IN.npy LAYOUT OUT.npy, where IN holds the (height * 3 / 2) x width
bytes of an NV12 or I420 frame and LAYOUT is nv12 or i420; OUT gets height x width x 3 RGB.
"""
import sys

import cv2
import numpy as np

source, layout, target = sys.argv[1:4]
frame = np.load(source)
code = {"nv12": cv2.COLOR_YUV2RGB_NV12, "i420": cv2.COLOR_YUV2RGB_I420}[layout]
np.save(target, cv2.cvtColor(frame, code))
