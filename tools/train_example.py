"""Train a small ResNet on a recpack dataset and report how much of each step waits for data.

    python tools/train_example.py demo/packed --steps 300 --batch-size 64 --size 128 --norm group

Copy this file as the starting point for your own training loop.  Group
normalization (``--norm group``) keeps small-batch training (segmentation,
detection) stable where batch statistics would be noisy.
"""

import argparse
import time

import torch
from torch import nn

from recpack import Augment, RecordDataset


def norm_layer(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(32, channels // 4), channels)


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), norm_layer(norm, outputs), nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False), norm_layer(norm, outputs),
        )
        self.skip = (
            nn.Identity() if stride == 1 and inputs == outputs
            else nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), norm_layer(norm, outputs))
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet(classes: int, norm: str, width: int = 32) -> nn.Module:
    """A ResNet-10-like network: a stem and four stages of one residual block each."""
    widths = [width, width * 2, width * 4, width * 8]
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), norm_layer(norm, width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    for index, channels in enumerate(widths):
        layers.append(Block(widths[max(index - 1, 0)], channels, 1 if index == 0 else 2, norm))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="training crop size")
    parser.add_argument("--norm", choices=("batch", "group"), default="batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: decode threads in this process)")
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = RecordDataset(args.dataset, batch_size=args.batch_size, augment=Augment(size=args.size),
                            normalize=True, pin_memory=device.type == "cuda")
    classes = len(dataset.manifest.classes or []) or 1000
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=args.workers)
    model = resnet(classes, args.norm).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)

    step, waited, started = 0, 0.0, time.perf_counter()
    while step < args.steps:
        dataset.set_epoch(step // max(len(dataset), 1))
        ready = time.perf_counter()
        for images, labels in loader:
            waited += time.perf_counter() - ready
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 20 == 0 or step == args.steps:
                elapsed = time.perf_counter() - started
                print(f"step {step:4d}  loss {loss.item():.3f}  {step * args.batch_size / elapsed:6.0f} img/s  "
                      f"waiting for data {100 * waited / elapsed:4.1f}% of the time", flush=True)
            if step == args.steps:
                break
            ready = time.perf_counter()


if __name__ == "__main__":
    main()
