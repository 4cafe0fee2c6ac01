#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, make a short H.264 clip, and run pose (17
# keypoints) and body-part segmentation on it with the generated random-weight models. Writes
# out/demo_overlay.mp4 and out/demo_results.jsonl. Random weights: the drawn keypoints and parts
# are noise and the video says so; real models are described in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release --quiet
mkdir -p out
if [ ! -f out/demo_input.mp4 ]; then
  gst-launch-1.0 -q videotestsrc pattern=ball num-buffers=90 \
    ! video/x-raw,width=1280,height=720,framerate=30/1 \
    ! x264enc speed-preset=ultrafast ! h264parse ! mp4mux ! filesink location=out/demo_input.mp4
fi
target/release/sapiens-stream run --input out/demo_input.mp4 \
  --pose-model engines/models/sapiens_tiny_pose17.onnx \
  --seg-model engines/models/sapiens_tiny_seg.onnx \
  --output out/demo_overlay.mp4 --results out/demo_results.jsonl "$@"
echo "demo: wrote out/demo_overlay.mp4 and out/demo_results.jsonl (random-weight models: not real results)"
