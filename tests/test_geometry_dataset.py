"""The geometry modes through RecordDataset: shapes, masks and boxes that follow the image, full size, transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import scenes
from recpack import Augment, Detection, RecordDataset
from recpack.errors import RecpackError
from recpack.pack.packer import PackOptions, pack
from recpack.pack.sources import open_source

MODES = [  # (mode, size, options) for batch mode; "full" is per-sample only
    ("random_resized_crop", (96, 128), {}),
    ("center_crop", (80, 80), {"train": False}),
    ("resize", (90, 120), {}),
    ("letterbox", (128, 128), {}),
    ("scale_crop", (112, 144), {"zoom": (0.4, 1.2)}),
]


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    listing = scenes.write_segmentation_set(root / "images", 24, seed=1)
    pack(open_source(str(listing)), str(root / "out"), PackOptions(shards=3, workers=1), show_progress=False)
    return root / "out"


@pytest.fixture(scope="module")
def detection(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    listing = scenes.write_detection_set(root / "images", 24, seed=2)
    pack(open_source(str(listing)), str(root / "out"), PackOptions(shards=3, workers=1), show_progress=False)
    return root / "out"


def nearest_class(images: torch.Tensor) -> np.ndarray:
    """Each pixel's scene class by its colour: (n, 3, H, W) -> (n, H, W)."""
    pixels = images.permute(0, 2, 3, 1).numpy().astype(np.int32)
    return ((pixels[..., None, :] - scenes.COLOURS) ** 2).sum(-1).argmin(-1)


def agreement(images: torch.Tensor, masks: torch.Tensor, ignore: int = 255) -> float:
    """Share of non-padding pixels whose colour names the mask's class (the textures blur a few edges)."""
    masks = masks.numpy()
    seen = masks != ignore
    return float((nearest_class(images)[seen] == masks[seen]).mean())


@pytest.mark.parametrize("mode, size, options", MODES, ids=[m for m, _, _ in MODES])
def test_segmentation_batches_in_every_mode_keep_image_and_mask_together(segmentation, mode, size, options):
    augment = Augment(size=size, mode=mode, **options)
    images, masks = next(iter(RecordDataset(str(segmentation), batch_size=24, augment=augment)))
    assert images.shape == (24, 3, *size) and masks.shape == (24, *size) and masks.dtype == torch.uint8
    assert agreement(images, masks) > 0.97
    pads = (masks == 255).sum().item()
    assert (pads > 0) == (mode in ("letterbox", "scale_crop"))
    if pads:
        assert (images.permute(0, 2, 3, 1)[masks == 255] == 0).all()


def test_full_size_gives_each_image_its_own_size_in_per_sample_mode_only(segmentation):
    with pytest.raises(RecpackError, match="per-sample mode"):
        RecordDataset(str(segmentation), batch_size=4, augment=Augment(mode="full"))
    ds = RecordDataset(str(segmentation), augment=Augment(mode="full", train=False), shuffle=False)
    samples = list(DataLoader(ds, batch_size=4, collate_fn=list, num_workers=2))
    flat = [sample for batch in samples for sample in batch]
    assert len(flat) == 24 and len({tuple(image.shape) for image, _ in flat}) > 5
    sizes = sorted((image.shape[2], image.shape[1]) for image, _ in flat)
    assert sizes == sorted(scenes._sizes(24, seed=1))  # the stored sizes, untouched
    for image, mask in flat:
        assert mask.shape == image.shape[1:]
        assert agreement(image[None], mask[None]) > 0.97


RECT_COLOURS = np.array([[60, 60, 60], [230, 30, 30], [30, 200, 40], [40, 60, 230], [240, 230, 40], [220, 40, 220]])


@pytest.fixture(scope="module")
def rectangles(tmp_path_factory):
    """A detection list of flat rectangles, one per colour (= class 1..5), disjoint, on a grey background."""
    root = tmp_path_factory.mktemp("rects")
    rng = np.random.default_rng(7)
    lines = []
    for index in range(16):
        width, height = int(rng.integers(200, 360)), int(rng.integers(150, 260))
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[...] = RECT_COLOURS[0]
        labels = [2.0, 5.0]
        for cls in range(1, 6):  # each in its own band of columns
            x0 = (cls - 1) * width // 5 + int(rng.integers(0, 6))
            x1 = cls * width // 5 - int(rng.integers(2, 8))
            y0 = int(rng.integers(0, height // 2))
            y1 = int(rng.integers(y0 + 20, height))
            pixels[y0:y1, x0:x1] = RECT_COLOURS[cls]
            labels += [cls, x0 / width, y0 / height, x1 / width, y1 / height]
        Image.fromarray(pixels).save(root / f"{index}.jpg", quality=95)
        lines.append("\t".join([str(index), *(f"{v:.8g}" for v in labels), f"{index}.jpg"]))
    (root / "det.lst").write_text("\n".join(lines) + "\n")
    pack(open_source(str(root / "det.lst")), str(root / "out"), PackOptions(shards=2, workers=1), show_progress=False)
    return root / "out"


@pytest.mark.parametrize("mode, size, options", MODES, ids=[m for m, _, _ in MODES])
def test_detection_boxes_bound_their_pixels_in_every_mode(rectangles, mode, size, options):
    """Each kept box must bound the pixels of its colour in the decoded image, within a pixel and a half."""
    augment = Augment(size=size, mode=mode, pad_value=(60, 60, 60), **options)
    ds = RecordDataset(str(rectangles), batch_size=16, augment=augment, detection=Detection(min_visible=0.3), seed=4,
                       placements=True, shuffle=False)
    images, boxes, placements = next(iter(ds))
    assert boxes.shape == (16, 5, 5) and boxes.dtype == torch.float32
    height, width = size
    pixels = images.permute(0, 2, 3, 1).numpy().astype(np.int32)
    classes = ((pixels[..., None, :] - RECT_COLOURS) ** 2).sum(-1).argmin(-1)
    stored = {}  # source size -> its boxes (the fixture's sizes are distinct)
    for line in (rectangles.parent / "det.lst").read_text().splitlines():
        image = Image.open(rectangles.parent / line.split("\t")[-1])
        stored[image.size] = np.array(list(map(float, line.split("\t")[3:-1]))).reshape(-1, 5)
    assert len(stored) == 16
    kept = 0
    for image_classes, rows, placement in zip(classes, boxes.numpy(), placements.numpy()):
        for cls, x0, y0, x1, y1 in rows[rows[:, 0] >= 0]:
            ys, xs = np.nonzero(image_classes == cls)
            kept += 1
            found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
            assert np.abs(found - [x0 * width, y0 * height, x1 * width, y1 * height]).max() <= 1.5
        source_w, source_h = int(placement[9]), int(placement[10])
        scale = placement[2] / placement[6] * placement[3] / placement[7]  # output pixels per source pixel
        for cls in set(range(1, 6)) - set(rows[:, 0].astype(int).tolist()):  # dropped: under 30% visible
            _, x0, y0, x1, y1 = stored[source_w, source_h][cls - 1]
            whole = (x1 - x0) * source_w * (y1 - y0) * source_h * scale
            assert (image_classes == cls).sum() < 0.3 * whole + 2 * (height + width)
    assert kept > 30
    assert (boxes[boxes[..., 0] < 0] == -1).all()


def test_detection_boxes_through_a_resize_are_the_stored_ones(detection):
    ds = RecordDataset(str(detection), batch_size=24, augment=Augment(size=(64, 64), mode="resize", train=False),
                       detection=Detection(), shuffle=False)
    _, boxes = next(iter(ds))
    stored = [scenes.scene(w, h, 2 * 100_003 + i)[2] for i, (w, h) in enumerate(scenes._sizes(24, seed=2))]
    got = sorted(tuple(np.round(row, 5)) for rows in boxes.numpy() for row in rows if row[0] >= 0)
    want = sorted(tuple(np.round(row, 5)) for rows in stored for row in rows)
    assert np.allclose(got, want, atol=1e-5)


def test_per_sample_detection_and_placements(detection):
    ds = RecordDataset(str(detection), augment=Augment(size=(96, 96), mode="letterbox", train=False),
                       detection=Detection(), placements=True, shuffle=False)
    images, boxes, placements = next(iter(DataLoader(ds, batch_size=6)))
    assert images.shape == (6, 3, 96, 96) and boxes.shape[1:] == (ds.manifest.label_width // 5, 5)
    left, top, width, height = placements[:, :4].T
    assert ((left == 0) | (top == 0)).all() and ((width == 96) | (height == 96)).all()
    for image, (x, y, w, h) in zip(images, placements[:, :4].int().tolist()):
        assert (image[:, :y] == 0).all() and (image[:, y + h:] == 0).all()  # the reported pad is the pad
        assert (image[:, :, :x] == 0).all() and (image[:, :, x + w:] == 0).all()


def test_per_sample_transform_gets_tensors_with_their_mask_and_may_return_anything(segmentation):
    seen = []

    def transform(image, mask):
        seen.append((image.dtype, image.shape, mask.shape))
        return {"image": image.float().mean(), "classes": torch.unique(mask)}

    ds = RecordDataset(str(segmentation), augment=Augment(size=(40, 60), mode="resize"), transform=transform)
    samples = list(ds)
    assert len(samples) == 24 and all(set(sample) == {"image", "classes"} for sample in samples)
    assert seen[0] == (torch.uint8, (3, 40, 60), (40, 60))



def test_per_sample_transform_gets_the_unpadded_boxes(detection):
    def transform(image, boxes):
        assert image.shape == (3, 50, 70) and boxes.ndim == 2 and boxes.shape[1] == 5
        assert (boxes[:, 0] >= 0).all()  # no -1 rows: those are the batch's padding
        return image.shape[1:], len(boxes)

    ds = RecordDataset(str(detection), augment=Augment(size=(50, 70), mode="resize"), detection=Detection(),
                       transform=transform)
    samples = list(ds)
    assert len(samples) == 24 and sum(count for _, count in samples) > 24
