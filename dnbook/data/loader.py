"""``DeviceLoader``: mini-batches from a dataset that lives on the training device.

CIFAR-10 is 150 MB as uint8, so the whole training set fits on any GPU. Keeping it there
removes the usual bottleneck of small-image training (Python workers decoding, augmenting and
copying one sample at a time): each batch is a gather from device memory, and the standard
CIFAR augmentation, a random 32x32 crop of the image zero-padded by 4 pixels plus a random
horizontal flip, is a second gather whose indices encode both the crop and the flip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dnbook._validation import check_positive_int

PAD = 4


def _check_stat(name: str, values: Sequence[float]) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.numel() != 3:
        raise ValueError(f"{name} must have 3 values (one per channel), got {values.numel()}")
    return values


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch)``: the same pair always gives the same
    stream, whatever the device, and neighbouring pairs give unrelated streams."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def random_crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = PAD
) -> torch.Tensor:
    """Crop each image of ``images`` (B, C, H, W) at ``offsets`` (B, 2) in its zero-padded
    copy, mirrored where ``flips`` (B,) is true; returns (B, C, H, W), no Python loop.

    Output pixel (i, j) of image b is padded pixel (offsets[b, 0] + i, offsets[b, 1] + j'),
    with j' = W - 1 - j if flipped else j: crop and flip are one ``gather``.
    """
    batch, channels, height, width = images.shape
    padded_width = width + 2 * pad
    padded = F.pad(images, (pad, pad, pad, pad)).flatten(2)  # (B, C, (H + 2 pad) * (W + 2 pad))
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (B, H)
    columns = torch.arange(width, device=images.device).expand(batch, width)
    columns = torch.where(flips[:, None], width - 1 - columns, columns) + offsets[:, 1:]  # (B, W)
    index = (rows[:, :, None] * padded_width + columns[:, None, :]).flatten(1)  # (B, H * W)
    crops = padded.gather(2, index[:, None, :].expand(batch, channels, height * width))
    return crops.view(batch, channels, height, width)


class DeviceLoader:
    """Iterate over ``(images, labels)`` batches of a uint8 dataset kept on ``device``.

    Training order is a permutation drawn from ``(seed, epoch)``; call ``set_epoch(e)`` before
    each epoch (as with ``DistributedSampler``), so that an interrupted run resumes with the
    same batches. Evaluation (``train=False``) goes through the data in order, unaugmented.

    Args:
        x_uint8: images, uint8 (N, 3, H, W).
        y: labels, (N,), any integer dtype.
        batch_size: images per batch (per process when ``world_size > 1``).
        train: shuffle and augment (random crop with 4-pixel zero padding, horizontal flip).
        mean, std: per-channel statistics on the 0-255 scale; batches are
            ``(x - mean) / std`` in float32.
        device: where the data lives and batches are made. Default: ``"cpu"``.
        seed: seed of the shuffling and augmentation. Default: 0.
        drop_last: drop the last incomplete batch. Default: ``train``.
        channels_last: return batches in ``torch.channels_last`` memory format. Default: False.
        rank, world_size: for data-parallel training: every process draws the same
            permutation and takes every ``world_size``-th sample from ``rank`` on, so the
            processes see disjoint, equally long shards. Default: 0, 1.

    Shape:
        - images: (B, 3, H, W) float32, labels: (B,) int64.

    Example:
        >>> x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
        >>> loader = DeviceLoader(x, torch.arange(100) % 10, 32, train=True,
        ...                       mean=(125.0, 123.0, 114.0), std=(63.0, 62.0, 67.0))
        >>> len(loader), next(iter(loader))[0].shape
        (3, torch.Size([32, 3, 32, 32]))
    """

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 or x_uint8.shape[1] != 3:
            raise ValueError(
                "x_uint8 must be uint8 images of shape (N, 3, H, W), "
                f"got {x_uint8.dtype} of shape {tuple(x_uint8.shape)}"
            )
        if y.shape != (len(x_uint8),):
            raise ValueError(f"y must have shape ({len(x_uint8)},), got {tuple(y.shape)}")
        check_positive_int("batch_size", batch_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.device = torch.device(device)
        self.train = train
        self.batch_size = batch_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        # Each process's shard: the same length on every rank, so no rank waits for a batch.
        self.num_samples = len(x_uint8) // world_size
        if self.num_samples == 0 or (self.drop_last and batch_size > self.num_samples):
            raise ValueError(
                f"batch_size ({batch_size}) is larger than the dataset "
                f"({self.num_samples} images{' per process' if world_size > 1 else ''}); "
                "the loader would yield no batch"
            )
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device, torch.int64)
        std = _check_stat("std", std)
        # (x - mean) / std computed as x * scale + shift: one fused multiply-add per pixel.
        self.scale = (1.0 / std).view(1, 3, 1, 1).to(self.device)
        self.shift = (-_check_stat("mean", mean) / std).view(1, 3, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling and augmentation of ``epoch`` for the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """This process's sample order, and the crop offsets and flips for each of them."""
        n = len(self.x)
        if not self.train:
            order = torch.arange(n)[self.rank :: self.world_size][: self.num_samples]
            return order.to(self.device), None, None
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=generator)
        offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        shard = slice(self.rank, self.world_size * self.num_samples, self.world_size)
        return (
            order[shard].to(self.device),
            offsets[shard].to(self.device),
            flips[shard].to(self.device),
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self._epoch_plan()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.x[index]  # (B, 3, H, W) uint8
            if self.train:
                batch = slice(start, start + self.batch_size)
                images = random_crop_flip(images, offsets[batch], flips[batch])
            images = images.float() * self.scale + self.shift
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.y[index]

    def __repr__(self) -> str:
        return (
            f"DeviceLoader({self.num_samples} images, batch_size={self.batch_size}, "
            f"{len(self)} batches, train={self.train}, drop_last={self.drop_last}, "
            f"device={self.device}, seed={self.seed}, epoch={self.epoch})"
        )
