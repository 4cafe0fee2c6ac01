"""The Sapiens2 sizes, head widths, tasks and constants (facebookresearch/sapiens2: `arch_zoo` in
sapiens/backbones/sapiens2.py and the task configs), without torch: engines/sapiens2.py builds the
PyTorch model from them and engines/generate_models.py the random-weight ONNX graphs.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

INPUT_HEIGHT, INPUT_WIDTH = 1024, 768
PATCH_SIZE = 16
GRID = (INPUT_HEIGHT // PATCH_SIZE, INPUT_WIDTH // PATCH_SIZE)  # 64 x 48
STORAGE_TOKENS = 8
EXTRA_TOKENS = 1 + STORAGE_TOKENS  # class token, then storage tokens
NORM_EPS = 1e-6
ROPE_BASE = 100.0


@dataclasses.dataclass(frozen=True)
class Arch:
    """Backbone widths of one size."""

    family: ClassVar[str] = "sapiens2"
    name: str
    embed_dim: int
    layers: int
    heads: int
    # Blocks at each end whose keys and values use every head; the rest use half.
    full_heads_early: int = 8
    full_heads_late: int = 8

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def ffn_dim(self) -> int:
        return 4 * self.embed_dim

    def kv_heads(self, block: int) -> int:
        full = block < self.full_heads_early or block >= self.layers - self.full_heads_late
        return self.heads if full else self.heads // 2


ARCHS = {
    a.name: a
    for a in (
        # Small enough for CI; one block at each end with all heads, so the middle two use half.
        Arch("tiny", 64, 4, 4, full_heads_early=1, full_heads_late=1),
        Arch("0.4b", 1024, 24, 16),
        Arch("0.8b", 1280, 32, 16),
        Arch("1b", 1536, 40, 24),
        Arch("5b", 2432, 56, 32),
    )
}


@dataclasses.dataclass(frozen=True)
class HeadWidths:
    """Channel widths of the four task heads at one size (the official task configs)."""

    pose_deconv: tuple[int, ...]
    pose_conv: tuple[int, ...]
    seg_deconv: tuple[int, ...]
    seg_conv: tuple[int, ...]
    normal_upsample: tuple[int, ...]
    normal_conv: tuple[int, ...]
    pointmap_upsample: tuple[int, ...]
    pointmap_conv: tuple[int, ...]
    scale_conv: tuple[int, ...]
    scale_hidden: tuple[int, ...]


SEG_WIDTHS = dict(seg_deconv=(512, 256, 128, 64), seg_conv=(64, 64))
SCALE_WIDTHS = dict(scale_conv=(1536, 512, 128), scale_hidden=(512, 128))
HEADS = {
    "tiny": HeadWidths(
        pose_deconv=(32, 32),
        pose_conv=(16, 16, 16),
        seg_deconv=(16, 16, 8, 8),
        seg_conv=(8, 8),
        normal_upsample=(16, 8, 8, 8),
        normal_conv=(8, 8, 8),
        pointmap_upsample=(16, 8, 8, 8),
        pointmap_conv=(8, 8, 8),
        scale_conv=(16, 16, 8),
        scale_hidden=(16, 8),
    ),
    **{
        size: HeadWidths(
            pose_deconv=(1024, 768),
            pose_conv=(512, 512, 256),
            normal_upsample=(768, 512, 256, 128),
            normal_conv=(64, 32, 16),
            pointmap_upsample=(1536, 768, 512, 256),
            pointmap_conv=(64, 32, 16),
            **SEG_WIDTHS,
            **SCALE_WIDTHS,
        )
        for size in ("0.4b", "0.8b")
    },
    "1b": HeadWidths(
        pose_deconv=(1536, 1024),
        pose_conv=(768, 512, 256),
        normal_upsample=(768, 512, 256, 128),
        normal_conv=(64, 32, 16),
        pointmap_upsample=(1536, 768, 512, 256),
        pointmap_conv=(64, 32, 16),
        **SEG_WIDTHS,
        **SCALE_WIDTHS,
    ),
    "5b": HeadWidths(
        pose_deconv=(1024, 768),
        pose_conv=(512, 512, 256),
        normal_upsample=(1536, 768, 512, 256),
        normal_conv=(128, 64, 32),
        pointmap_upsample=(1536, 768, 768, 768),
        pointmap_conv=(128, 64, 32),
        **SEG_WIDTHS,
        **SCALE_WIDTHS,
    ),
}

KEYPOINTS = 308
SEG_CLASSES = 29
# The scale branch's flatten: three stride-2 convolutions take the 64 x 48 grid to 8 x 6.
SCALE_GRID = (GRID[0] // 8, GRID[1] // 8)
TASKS = ("pose", "seg", "normal", "pointmap")


def output_shape(task: str) -> tuple[int, int, int]:
    return {
        "pose": (KEYPOINTS, INPUT_HEIGHT // 4, INPUT_WIDTH // 4),
        "seg": (SEG_CLASSES, INPUT_HEIGHT, INPUT_WIDTH),
        "normal": (3, INPUT_HEIGHT, INPUT_WIDTH),
        "pointmap": (4, INPUT_HEIGHT, INPUT_WIDTH),
    }[task]
