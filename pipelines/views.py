"""Deterministic views: view id -> (crop offset, horizontal flip).

A view is the only randomness in 2D augmentation. Every loader (torch, resident,
DALI) and the source-output cache turn a view id into pixels through this module,
so a cached source output always belongs to exactly the pixels the target sees.

Views of a padded image (pad p on every side, zero fill) are the (2p+1)^2 crop
offsets x 2 flips. View 0 is the un-shifted original and view 1 its mirror; the
remaining views come in (original, mirror) pairs of offsets in a fixed shuffled
order, so any even K picks a spread-out subset and K = 2(2p+1)^2 is the standard
"pad-p random crop + flip" augmentation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class ViewSet:
    pad: int = 4
    count: int = 162  # K: how many views each sample has

    def __post_init__(self):
        if self.pad < 0:
            raise ValueError(f"views: pad must be >= 0, got {self.pad}")
        if not 1 <= self.count <= self.max_count:
            raise ValueError(f"views: count must be in 1..{self.max_count} for pad={self.pad}, got {self.count}")
        if self.count > 1 and self.count % 2:
            raise ValueError(f"views: count must be 1 or even (views come as original/mirror pairs), got {self.count}")

    @property
    def max_count(self) -> int:
        return 2 * (2 * self.pad + 1) ** 2

    @cached_property
    def table(self) -> np.ndarray:
        """int64 [K, 3]: (dy, dx, flip) of each view, offsets into the padded image."""
        side = 2 * self.pad + 1
        offsets = [(dy, dx) for dy in range(side) for dx in range(side)]
        center = (self.pad, self.pad)
        offsets.remove(center)
        order = np.random.default_rng(0).permutation(len(offsets))  # fixed forever: changing it invalidates caches
        offsets = [center] + [offsets[i] for i in order]
        rows = [(dy, dx, flip) for dy, dx in offsets for flip in (0, 1)]
        return np.asarray(rows[: self.count], dtype=np.int64)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.table.tobytes() + f"pad={self.pad}".encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.count} views (pad {self.pad})"


EVAL_VIEWS = ViewSet(pad=0, count=1)


def apply_views(images: torch.Tensor, views: torch.Tensor, view_set: ViewSet) -> torch.Tensor:
    """Crop and flip a batch: images [N, C, H, W] (any dtype, any device) -> same shape."""
    return gather_views(pad_for_views(images, view_set), torch.arange(len(images), device=images.device), views,
                        view_set)


def pad_for_views(images: torch.Tensor, view_set: ViewSet) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H + 2 pad, W + 2 pad], zero-filled, channels_last (a view's pixel is one C-vector)."""
    p = view_set.pad
    padded = torch.nn.functional.pad(images, (p, p, p, p)) if p else images
    return padded.contiguous(memory_format=torch.channels_last)


def gather_views(padded: torch.Tensor, index: torch.Tensor, views: torch.Tensor, view_set: ViewSet) -> torch.Tensor:
    """The views of padded[index]: a padded set (pad_for_views; any dtype, any device), index and views [B]
    -> [B, C, H, W].

    Index arithmetic and one gather straight from the set, on the set's device: the un-augmented batch is
    never copied out first. A GPU-resident uint8 set is augmented without the host, as a single CPU
    sample (N=1) is.
    """
    p, device = view_set.pad, padded.device
    h, w = padded.shape[2] - 2 * p, padded.shape[3] - 2 * p
    table = torch.as_tensor(view_set.table, device=device)[views.to(device)]
    dy, dx, flip = table[:, 0], table[:, 1], table[:, 2].bool()
    rows = dy[:, None] + torch.arange(h, device=device)  # [B, H]
    cols = torch.arange(w, device=device).expand(len(table), w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]  # [B, W]
    out = padded.permute(0, 2, 3, 1)[index.to(device)[:, None, None], rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def apply_view_numpy(image_hwc: np.ndarray, view: int, view_set: ViewSet) -> np.ndarray:
    """The same view on one HWC uint8 image, for per-sample loaders."""
    dy, dx, flip = view_set.table[view]
    p = view_set.pad
    h, w = image_hwc.shape[:2]
    padded = np.pad(image_hwc, ((p, p), (p, p), (0, 0))) if p else image_hwc
    out = padded[dy: dy + h, dx: dx + w]
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


# ---------------------------------------------------------------- clip views (video)

CLIP_SCALES = (1.0, 2 ** -0.25, 2 ** -0.5, 2 ** -0.75, 0.5)  # of the frame's shorter side (3D-ResNets-PyTorch)
CLIP_POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class ClipViewSet:
    """A clip's spatial view: multi-scale corner crop x flip, the same for every frame of the clip.

    View id = (scale * 5 + position) * 2 + flip: view 0 is the full-scale centre crop (the
    evaluation view, = resize the shorter side to `size` then centre-crop), view 1 its mirror;
    K = 50 is the training augmentation of 3D-ResNets-PyTorch. The square crop is resized to
    `size` x `size`. The temporal position of a clip is not a view: it is the batch's `start`.
    """
    count: int = 50
    size: int = 112

    def __post_init__(self):
        if not 1 <= self.count <= self.max_count or (self.count > 1 and self.count % 2):
            raise ValueError(f"clip views: count must be 1 or even in 2..{self.max_count}, got {self.count}")

    @property
    def max_count(self) -> int:
        return 2 * len(CLIP_SCALES) * len(CLIP_POSITIONS)

    @cached_property
    def table(self) -> np.ndarray:
        """int64 [K, 3]: (scale index, position index, flip) of each view."""
        rows = [(s, p, f) for s in range(len(CLIP_SCALES)) for p in range(len(CLIP_POSITIONS)) for f in (0, 1)]
        return np.asarray(rows[: self.count], dtype=np.int64)

    def crop_box(self, view: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the view's square crop in a height x width frame."""
        scale, position, _ = self.table[view]
        side = int(min(height, width) * CLIP_SCALES[scale])
        x0, y0 = {"center": ((width - side) // 2, (height - side) // 2), "top_left": (0, 0),
                  "top_right": (width - side, 0), "bottom_left": (0, height - side),
                  "bottom_right": (width - side, height - side)}[CLIP_POSITIONS[position]]
        return x0, y0, x0 + side, y0 + side

    def flip(self, view: int) -> bool:
        return bool(self.table[view, 2])

    def fingerprint(self) -> str:
        # "crop-resize": pixels of pipelines.render.resize_clip (crop, then torch's uint8 bilinear resize)
        spec = f"clip size={self.size} scales={CLIP_SCALES} crop-resize"
        return hashlib.sha256(self.table.tobytes() + spec.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.count} clip views ({self.size}x{self.size})"


CLIP_EVAL_VIEWS = ClipViewSet(count=1)


def clip_frame_indices(num_frames: int, start: int, length: int) -> np.ndarray:
    """Frames of the clip of `length` starting at `start`; past the video's end the clip's own
    frames repeat (3D-ResNets-PyTorch's LoopPadding), so short videos still give full clips."""
    if not 0 <= start < num_frames:
        raise ValueError(f"clip start {start} outside a video of {num_frames} frames")
    return start + np.arange(length) % min(length, num_frames - start)
