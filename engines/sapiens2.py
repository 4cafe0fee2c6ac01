"""Sapiens2 in PyTorch, written for this project from the official description (facebookresearch/
sapiens2, `sapiens/backbones/standalone/sapiens2.py` and the task configs), to load the official
`*.safetensors` checkpoints by their parameter names and export them to ONNX.

Backbone: 16x16 patch embedding (no position embedding), a class token and 8 storage tokens in
front of the 64 x 48 patch tokens, pre-norm blocks (RMSNorm; grouped-query attention with QK
RMSNorm and 2-D axial rotary embeddings on the patch tokens; LayerScale on the attention branch;
SwiGLU feed-forward with the gate and value fused in `w12`), a final RMSNorm, and the patch tokens
back as a (B, D, 64, 48) feature map. The first and last 8 blocks use all heads for keys and
values, the blocks between them half as many.

Written for export: RMSNorm by hand (ONNX has no RMSNormalization before opset 23), attention
as MatMul / Softmax / MatMul with the key and value heads repeated (no scaled_dot_product_attention),
the rotary table a constant of the fixed 64 x 48 grid.

Precision: the official model computes the rotary table in bfloat16 and rounds q and k to
bfloat16 around the rotation even when everything else runs in float32. `rope="bf16"` does the
same; `rope="fp32"` (what the export uses) keeps the bfloat16 table but rotates in float32, so the
graph has no bfloat16 tensor, which ONNX Runtime's CPU, CUDA and TensorRT providers and the
float16 conversion all take. The difference is measured by engines/test_sapiens2.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from sapiens2_arch import (
    ARCHS,
    EXTRA_TOKENS,
    INPUT_HEIGHT,
    INPUT_WIDTH,
    GRID,
    HEADS,
    KEYPOINTS,
    NORM_EPS,
    PATCH_SIZE,
    ROPE_BASE,
    SCALE_GRID,
    SEG_CLASSES,
    STORAGE_TOKENS,
    TASKS,
    Arch,
    HeadWidths,
    output_shape,
)
from torch import nn

# What the export and its tests use, the tables (from sapiens2_arch) included.
__all__ = [
    "ARCHS",
    "HEADS",
    "INPUT_HEIGHT",
    "INPUT_WIDTH",
    "KEYPOINTS",
    "TASKS",
    "CheckpointError",
    "Sapiens2Model",
    "build",
    "fused_attention",
    "load_checkpoint",
    "output_shape",
]

def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight)


def rope_periods(head_dim: int) -> torch.Tensor:
    """periods[k] = 100 ** (k / (head_dim / 4)), computed in bfloat16 as the official buffer is."""
    quarter = head_dim // 4
    exponents = 2 * torch.arange(quarter, dtype=torch.bfloat16) / (head_dim // 2)
    return ROPE_BASE**exponents


def rope_table(periods: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each (H*W, head_dim), in the periods' dtype: coordinates (i + 0.5) / n * 2 - 1
    per axis, angles [y..., x...] repeated twice (rotate-half layout)."""
    height, width = grid
    options = dict(device=periods.device, dtype=periods.dtype)
    ys = torch.arange(0.5, height, **options) / height
    xs = torch.arange(0.5, width, **options) / width
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).flatten(0, 1)
    coords = 2.0 * coords - 1.0
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return torch.sin(angles), torch.cos(angles)


class RopeEmbedding(nn.Module):
    """Holds the checkpoint's `periods` buffer."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("periods", rope_periods(head_dim), persistent=True)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Rotates the patch tokens of (B, heads, N, head_dim); the extra tokens in front pass through."""
    dtype = x.dtype
    if bf16:
        x = x.to(torch.bfloat16)
    prefix, patches = x[:, :, :EXTRA_TOKENS], x[:, :, EXTRA_TOKENS:]
    rotated = patches * cos + rotate_half(patches) * sin
    return torch.cat([prefix, rotated], dim=2).to(dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class GroupedQueryAttention(nn.Module):
    # MatMul / Softmax / MatMul, which every ONNX engine runs; `fused_attention` switches a
    # model to PyTorch's fused kernel (the same result up to float rounding) for speed runs.
    fused = False

    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.gamma = LayerScale(dim)

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, heads, self.head_dim).transpose(1, 2)

    def repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """Key/value head g serves query heads g*r .. g*r+r-1 (repeat_interleave), by expand."""
        repeats = self.heads // self.kv_heads
        if repeats == 1:
            return x
        batch, _, tokens, head_dim = x.shape
        x = x[:, :, None].expand(batch, self.kv_heads, repeats, tokens, head_dim)
        return x.reshape(batch, self.heads, tokens, head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], bf16_rope: bool) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q = self.q_norm(self.split_heads(self.wq(x), self.heads))
        k = self.k_norm(self.split_heads(self.wk(x), self.kv_heads))
        v = self.split_heads(self.wv(x), self.kv_heads)
        k, v = self.repeat_kv(k), self.repeat_kv(v)
        sin, cos = rope
        q, k = apply_rope(q, sin, cos, bf16_rope), apply_rope(k, sin, cos, bf16_rope)
        if self.fused:
            context = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            context = scores.softmax(dim=-1) @ v
        context = context.transpose(1, 2).reshape(batch, tokens, dim)
        return self.gamma(self.proj(context))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class Block(nn.Module):
    def __init__(self, arch: Arch, index: int) -> None:
        super().__init__()
        self.ln1 = RMSNorm(arch.embed_dim)
        self.attn = GroupedQueryAttention(arch.embed_dim, arch.heads, arch.kv_heads(index))
        self.ln2 = RMSNorm(arch.embed_dim)
        self.ffn = SwiGLU(arch.embed_dim, arch.ffn_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], bf16_rope: bool) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, bf16_rope)
        return x + self.ffn(self.ln2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)


class Sapiens2Backbone(nn.Module):
    """Image (B, 3, 1024, 768), normalised, to features (B, D, 64, 48)."""

    def __init__(self, arch: Arch, rope: str = "fp32") -> None:
        super().__init__()
        if rope not in ("bf16", "fp32"):
            raise ValueError(f"rope must be bf16 or fp32, not {rope}")
        self.arch, self.bf16_rope = arch, rope == "bf16"
        dim = arch.embed_dim
        self.patch_embed = PatchEmbed(dim)
        self.rope_embed = RopeEmbedding(arch.head_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, STORAGE_TOKENS, dim))
        self.blocks = nn.Sequential(*[Block(arch, i) for i in range(arch.layers)])
        self.ln1 = RMSNorm(dim)
        self.frozen_rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def rope(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frozen_rope is not None:
            return self.frozen_rope
        sin, cos = rope_table(self.rope_embed.periods, GRID)
        if self.bf16_rope:
            return sin, cos
        return sin.float(), cos.float()

    def freeze_rope(self) -> None:
        """Computes the table once from the loaded periods, so an export holds it as a constant
        instead of tracing its bfloat16 arithmetic."""
        self.frozen_rope = None
        self.frozen_rope = self.rope()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.projection(image)
        batch, dim, height, width = x.shape
        x = x.flatten(2).transpose(1, 2)
        extra = [self.cls_token.expand(batch, -1, -1), self.storage_tokens.expand(batch, -1, -1)]
        x = torch.cat(extra + [x], dim=1)
        rope = self.rope()
        for block in self.blocks:
            x = block(x, rope, self.bf16_rope)
        x = self.ln1(x)[:, EXTRA_TOKENS:]
        return x.reshape(batch, height, width, dim).permute(0, 3, 1, 2)


def norm_act(channels: int) -> list[nn.Module]:
    """InstanceNorm2d (no parameters, eps 1e-5) then SiLU: the layer pair every head uses."""
    return [nn.InstanceNorm2d(channels), nn.SiLU()]


def deconv_stack(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.ConvTranspose2d(in_channels, width, 4, stride=2, padding=1, bias=False), *norm_act(width)]
        in_channels = width
    return nn.Sequential(*layers)


def conv_stack(in_channels: int, widths: tuple[int, ...], kernel: int, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel, stride=stride, padding=kernel // 2), *norm_act(width)]
        in_channels = width
    return nn.Sequential(*layers)


class HeatmapHead(nn.Module):
    """Pose: 2 x (ConvTranspose k4 s2 + IN + SiLU), 3 x (1x1 conv + IN + SiLU), 1x1 to 308 heatmaps."""

    def __init__(self, dim: int, widths: HeadWidths) -> None:
        super().__init__()
        self.deconv_layers = deconv_stack(dim, widths.pose_deconv)
        self.conv_layers = conv_stack(widths.pose_deconv[-1], widths.pose_conv, 1)
        self.conv_pose = nn.Conv2d(widths.pose_conv[-1], KEYPOINTS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pose(self.conv_layers(self.deconv_layers(x)))


class SegHead(nn.Module):
    """4 x (ConvTranspose k4 s2 + IN + SiLU) to full resolution, 2 x 1x1, 1x1 to 29 logits."""

    def __init__(self, dim: int, widths: HeadWidths) -> None:
        super().__init__()
        self.deconv_layers = deconv_stack(dim, widths.seg_deconv)
        self.conv_layers = conv_stack(widths.seg_deconv[-1], widths.seg_conv, 1)
        self.conv_seg = nn.Conv2d(widths.seg_conv[-1], SEG_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.conv_layers(self.deconv_layers(x)))


class UpsampleTrunk(nn.Module):
    """The normal and pointmap trunk: 3x3 conv, 4 x (3x3 conv to 4x channels, PixelShuffle 2,
    IN, SiLU), 3 x (3x3 conv, IN, SiLU): (B, D, 64, 48) to full resolution."""

    def __init__(self, dim: int, upsample: tuple[int, ...], convs: tuple[int, ...]) -> None:
        super().__init__()
        self.input_conv = conv_stack(dim, (dim,), 3)
        blocks, channels = [], dim
        for width in upsample:
            blocks.append(nn.Sequential(nn.Conv2d(channels, 4 * width, 3, padding=1), nn.PixelShuffle(2), *norm_act(width)))
            channels = width
        self.upsample_blocks = nn.Sequential(*blocks)
        self.conv_layers = conv_stack(channels, convs, 3)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(self.upsample_blocks(self.input_conv(x)))


class NormalHead(UpsampleTrunk):
    def __init__(self, dim: int, widths: HeadWidths) -> None:
        super().__init__(dim, widths.normal_upsample, widths.normal_conv)
        self.conv_normal = nn.Conv2d(widths.normal_conv[-1], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_normal(self.trunk(x))


class PointmapHead(UpsampleTrunk):
    """The canonical point map (3 channels) and, from the backbone features, its scale: three
    stride-2 1x1 convs to 8 x 6, flattened, three linear layers to one value per image."""

    def __init__(self, dim: int, widths: HeadWidths) -> None:
        super().__init__(dim, widths.pointmap_upsample, widths.pointmap_conv)
        self.conv_pointmap = nn.Conv2d(widths.pointmap_conv[-1], 3, 1)
        self.scale_conv_layers = conv_stack(dim, widths.scale_conv, 1, stride=2)
        flat = widths.scale_conv[-1] * SCALE_GRID[0] * SCALE_GRID[1]
        hidden = widths.scale_hidden
        self.scale_final_layer = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden[0]), nn.SiLU(), nn.Linear(hidden[0], hidden[1]), nn.SiLU(), nn.Linear(hidden[1], 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pointmap = self.conv_pointmap(self.trunk(x))
        return pointmap, self.scale_final_layer(self.scale_conv_layers(x))


HEAD_CLASSES = {"pose": HeatmapHead, "seg": SegHead, "normal": NormalHead, "pointmap": PointmapHead}


class Sapiens2Model(nn.Module):
    """A task model as the official checkpoints hold it (`backbone.*`, `decode_head.*`), with the
    one float32 output sapiens-stream runs: heatmaps (B, 308, 256, 192), logits (B, 29, 1024, 768),
    normals (B, 3, 1024, 768), or for pointmap (B, 4, 1024, 768): the canonical point map and,
    as a fourth plane, its scale repeated (metric points = map / scale), so every engine keeps
    its one-output contract."""

    def __init__(self, arch: Arch, task: str, widths: HeadWidths, rope: str = "fp32") -> None:
        super().__init__()
        if task not in HEAD_CLASSES:
            raise ValueError(f"unknown Sapiens2 task {task}")
        self.task = task
        self.backbone = Sapiens2Backbone(arch, rope)
        self.decode_head = HEAD_CLASSES[task](arch.embed_dim, widths)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.decode_head(self.backbone(image))
        if self.task != "pointmap":
            return out
        pointmap, scale = out
        plane = scale[:, :, None, None].expand(-1, 1, *pointmap.shape[2:])
        return torch.cat([pointmap, plane], dim=1)


def build(size: str, task: str, rope: str = "fp32") -> Sapiens2Model:
    return Sapiens2Model(ARCHS[size], task, HEADS[size], rope).eval()


def fused_attention(model: nn.Module) -> None:
    """Runs `model`'s attention with F.scaled_dot_product_attention (not for export)."""
    for module in model.modules():
        if isinstance(module, GroupedQueryAttention):
            module.fused = True


class CheckpointError(Exception):
    """A checkpoint that does not fit the model, said in one line."""


def load_checkpoint(model: nn.Module, path: Path) -> dict:
    """Loads `path` (safetensors) into `model` by parameter name; every tensor of the model must be
    in the file with its shape, and the file must hold nothing else. Returns the file's dtypes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({error})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        if extra:
            parts.append(f"{len(extra)} unexpected ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})")
        raise CheckpointError(f"{path.name} does not fit the model: tensors {'; '.join(parts)}")
    wrong = [
        f"{name} {tuple(tensors[name].shape)} (model {tuple(t.shape)})"
        for name, t in expected.items()
        if tensors[name].shape != t.shape
    ]
    if wrong:
        raise CheckpointError(f"{path.name} does not fit the model: shapes differ for {', '.join(wrong[:3])}")
    model.load_state_dict(tensors, strict=True)
    return {str(t.dtype).removeprefix("torch.") for t in tensors.values()}
