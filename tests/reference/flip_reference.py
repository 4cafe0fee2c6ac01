"""Independent NumPy / ONNX Runtime reference for the pose flip test (src/tasks/flip.rs), with
mmpose semantics: the mirrored input is torch.flip(inputs, [-1]); its heatmaps go through
flip_heatmaps(flip_mode='heatmap', shift_heatmap=False), i.e. flip along W then select channels
flip_indices; the result is (plain + flipped) * 0.5.

    flip_reference.py merge PLAIN.npy MIRRORED.npy FLIP_INDICES OUT.npy
        PLAIN, MIRRORED float32 (N, K, H, W); FLIP_INDICES comma-separated (K of them).
    flip_reference.py model MODEL.onnx INPUT.npy FLIP_INDICES OUT.npy
        Runs the model with onnxruntime on INPUT (N, 3, H, W) and on np.flip(INPUT, -1), one
        item at a time, and saves the merged heatmaps.
"""

import sys

import numpy as np


def flip_heatmaps(heatmaps, flip_indices):
    return heatmaps[:, :, :, ::-1][:, flip_indices]


def merge(plain, mirrored, flip_indices):
    return (plain + flip_heatmaps(mirrored, flip_indices)) * np.float32(0.5)


def run_model(model_path, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: item[None]})[0] for item in inputs])


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    command, first, second, indices, out_path = argv
    flip_indices = [int(k) for k in indices.split(",")]
    if command == "merge":
        merged = merge(np.load(first), np.load(second), flip_indices)
    elif command == "model":
        inputs = np.load(second)
        plain = run_model(first, inputs)
        mirrored = run_model(first, np.ascontiguousarray(np.flip(inputs, -1)))
        merged = merge(plain, mirrored, flip_indices)
    else:
        sys.exit(__doc__)
    np.save(out_path, merged.astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1:])
