"""Train a small U-Net on a recpack segmentation dataset, on one process or several (torch.distributed).

    python tools/train_segmentation.py DATASET --steps 200 --size 256x320 --geometry scale_crop --norm group
    torchrun --standalone --nproc_per_node 2 tools/train_segmentation.py DATASET --steps 200 --backend gloo

A dataset: ``recpack pack list.txt out/`` of a list whose lines end with a PNG
label mask (``image<TAB>mask``); ``python tools/scenes.py segmentation DIR``
generates one.  ``--geometry resize`` trains on whole frames (SegNet on
CamVid), ``scale_crop`` on random crops of rescaled images, padded with
``--ignore-index`` in the masks (Cityscapes-style).  Each rank reads its own
slice of every epoch (recpack takes rank and world size from torch.distributed).
Group normalization (``--norm group``) suits the small per-GPU batches of
segmentation; with ``--norm batch`` each process keeps its own statistics.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn

from recpack import Augment, RecordDataset


def norm_layer(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(8, channels // 4), channels)


def double_conv(inputs: int, outputs: int, norm: str) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), norm_layer(norm, outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), norm_layer(norm, outputs), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Three levels down, three up, skip connections: the smallest network that segments the scenes."""

    def __init__(self, classes: int, norm: str, width: int = 16):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.down = nn.ModuleList([double_conv(3, widths[0], norm)] +
                                  [double_conv(widths[i], widths[i + 1], norm) for i in range(3)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(3)])
        self.merge = nn.ModuleList([double_conv(widths[i] * 2, widths[i], norm) for i in range(3)])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for index in reversed(range(3)):
            x = self.up[index](x)
            skip = skips[index]
            x = nn.functional.pad(x, (0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]))
            x = self.merge[index](torch.cat([skip, x], 1))
        return self.head(x)


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--size", type=parse_size, default=(256, 320), help="HxW of the training input")
    parser.add_argument("--geometry", choices=("resize", "scale_crop", "random_resized_crop"), default="scale_crop")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--ignore-index", type=int, default=255)
    parser.add_argument("--norm", choices=("batch", "group"), default="group")
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend under torchrun (nccl on GPUs)")
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group(args.backend)
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)  # the same initial weights on every rank
    augment = Augment(size=args.size, mode=args.geometry, ignore_index=args.ignore_index)
    dataset = RecordDataset(args.dataset, batch_size=args.batch_size, augment=augment, normalize=True,
                            drop_last=True, pin_memory=device.type == "cuda")
    model = UNet(args.classes, args.norm).to(device, memory_format=torch.channels_last)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    step, epoch, started = 0, 0, time.perf_counter()
    while step < args.steps:
        dataset.set_epoch(epoch)
        for images, masks in dataset:
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True).long()
            loss = nn.functional.cross_entropy(model(images), masks, ignore_index=args.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if rank == 0 and (step % 10 == 0 or step == args.steps):
                rate = step * args.batch_size * (dist.get_world_size() if distributed else 1) / (time.perf_counter() - started)
                print(f"step {step:4d}  loss {loss.item():.3f}  {rate:5.1f} img/s", flush=True)
            if step == args.steps:
                break
        epoch += 1
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
