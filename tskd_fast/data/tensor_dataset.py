"""In-memory uint8 image tensors with the CIFAR augmentation applied per batch (vectorised)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


class AugmentedTensorDataset(Dataset):
    """Images (N, 3, H, W) uint8 and labels (N,) int64 held in memory.

    Items are (image (3, H, W) float32 normalised with mean/std, label int64 scalar tensor). With
    ``augment`` each image gets a random crop of its zero-padded (``pad`` pixels) version and a
    random horizontal flip, as torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip do;
    ``__getitems__`` (used by DataLoader for whole batches) does this for a batch at once, which
    is what makes the embedded dataset cheap on a small CPU. Randomness comes from torch's global
    generator (per-worker seeded by the DataLoader), so runs are reproducible.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        pad: int = 4,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.augment, self.pad = augment, pad

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if self.augment:
            x = self._crop_flip(x)
        x = (x.float() - self.mean) / self.std
        return list(zip(x.unbind(0), self.labels[idx].unbind(0)))

    def _crop_flip(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) uint8 -> same shape: random crops of the zero-padded batch, random flips."""
        b, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        top = torch.randint(0, 2 * p + 1, (b,))
        left = torch.randint(0, 2 * p + 1, (b,))
        flip = torch.rand(b) < 0.5
        rows = top[:, None] + torch.arange(h)[None, :]  # (B, H)
        cols = left[:, None] + torch.arange(w)[None, :]  # (B, W)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(b)[:, None, None]
        # Advanced indexing over (batch, row, col) moves the channel axis last: (B, H, W, 3).
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()
