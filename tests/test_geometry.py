"""The geometry modes as pure functions (read/geometry.py), over grids of sizes, and boxes against hand-computed ones."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recpack.read.decode import Augment
from recpack.read.detection import Detection, objects_of, padded
from recpack.read.geometry import MODES, Placement, choose_placement, place_boxes

EPS = 1e-6
sides = st.integers(1, 3000)
outputs = st.integers(1, 700)


def placements(width, height, mode, canvas, seed):
    """The placement in training (seeded) and in evaluation, for modes that have both."""
    rng = random.Random(seed)
    train = choose_placement(width, height, mode, canvas, rng=rng)
    evaluation = None if mode == "random_resized_crop" else choose_placement(width, height, mode, canvas, rng=None)
    return [p for p in (train, evaluation) if p is not None]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(MODES), sides, sides, outputs, outputs, st.integers(0, 2**32))
def test_every_placement_stays_inside_its_image_and_canvas(mode, width, height, out_h, out_w, seed):
    for placement in placements(width, height, mode, (out_h, out_w), seed):
        left, top, w, h = placement.target
        canvas_h, canvas_w = placement.canvas
        assert all(isinstance(v, int) for v in placement.target)
        assert 0 <= left and 0 <= top and left + w <= canvas_w and top + h <= canvas_h
        s_left, s_top, s_w, s_h = placement.source
        assert -EPS <= s_left and -EPS <= s_top
        assert s_left + s_w <= width * (1 + EPS) + EPS and s_top + s_h <= height * (1 + EPS) + EPS
        assert (s_w > 0 and s_h > 0) or (w == 0 or h == 0)
        drawn = placement.drawn
        assert drawn[2:] == (w, h) and 0 <= drawn[0] <= canvas_w - w
        if mode == "full":
            assert placement.canvas == (height, width) and placement.target == (0, 0, width, height)
        else:
            assert placement.canvas == (out_h, out_w)
        if mode in ("random_resized_crop", "resize", "full"):
            assert not placement.padded


@settings(max_examples=300, deadline=None)
@given(sides, sides, outputs, outputs)
def test_letterbox_keeps_the_aspect_and_centres_the_image(width, height, out_h, out_w):
    placement = choose_placement(width, height, "letterbox", (out_h, out_w), rng=None)
    left, top, w, h = placement.target
    assert placement.source == (0, 0, width, height)
    assert w == out_w or h == out_h  # it fills one side
    assert abs(w / width - h / height) <= 1 / min(width, height) + 1 / min(w, h) * max(w / width, h / height)
    assert abs(left - (out_w - w - left)) <= 1 and abs(top - (out_h - h - top)) <= 1


@settings(max_examples=300, deadline=None)
@given(sides, sides, outputs, outputs, st.floats(0.25, 3.0), st.integers(0, 2**32))
def test_scale_crop_is_a_window_of_the_zoomed_image_padded_right_and_bottom(width, height, out_h, out_w, zoom, seed):
    placement = choose_placement(width, height, "scale_crop", (out_h, out_w), rng=random.Random(seed), zoom=(zoom, zoom))
    zoomed_w, zoomed_h = max(round(width * zoom), 1), max(round(height * zoom), 1)
    assert placement.target == (0, 0, min(out_w, zoomed_w), min(out_h, zoomed_h))
    left, top, w, h = placement.source
    assert w == pytest.approx(placement.target[2] * width / zoomed_w)
    assert h == pytest.approx(placement.target[3] * height / zoomed_h)
    # the window starts on a whole zoomed pixel
    assert left * zoomed_w / width == pytest.approx(round(left * zoomed_w / width), abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 3000), st.integers(8, 3000), st.integers(8, 600), st.integers(8, 600))
def test_center_crop_is_centred_and_pads_only_where_it_leaves_the_image(width, height, out_h, out_w):
    placement = choose_placement(width, height, "center_crop", (out_h, out_w), rng=None)
    left, top, w, h = placement.source
    assert abs(left - (width - left - w)) < 1e-6 * width + 2 * width / max(out_w, 1)
    assert abs(top - (height - top - h)) < 1e-6 * height + 2 * height / max(out_h, 1)
    shorter = round(min(out_h, out_w) / 0.875)
    if out_w * min(width, height) / shorter <= width and out_h * min(width, height) / shorter <= height:
        assert not placement.padded


def test_augment_defaults_are_the_classic_pair_and_bad_options_are_refused():
    assert Augment().geometry == "random_resized_crop" and Augment(train=False).geometry == "center_crop"
    assert Augment(size=(120, 200)).canvas == (120, 200) and Augment(mode="full").canvas is None
    with pytest.raises(ValueError, match="needs train=True"):
        Augment(mode="random_resized_crop", train=False)
    with pytest.raises(ValueError, match="not one of"):
        Augment(mode="stretch")
    with pytest.raises(ValueError, match="positive int or"):
        Augment(size=(0, 10))


# --- boxes --------------------------------------------------------------------------------


def test_boxes_through_a_resize_stay_where_they_were():
    placement = choose_placement(200, 100, "resize", (50, 80), rng=None)
    boxes = np.array([[1, 0.1, 0.2, 0.5, 0.6]], np.float32)
    assert place_boxes(boxes, placement, 0.3) == pytest.approx(boxes)


def test_boxes_through_a_letterbox_are_hand_computed():
    # 200x100 image on a 200x200 canvas: scale 1, drawn at (0, 50, 200, 100)
    placement = choose_placement(200, 100, "letterbox", (200, 200), rng=None)
    assert placement.target == (0, 50, 200, 100)
    boxes = np.array([[0, 0.25, 0.5, 0.75, 1.0, 7]], np.float32)  # px x 50..150, y 50..100; an extra column
    assert place_boxes(boxes, placement, 0.3).tolist() == [[0, 0.25, 0.5, 0.75, 0.75, 7]]
    flipped = Placement(placement.source, placement.target, placement.canvas, True, placement.source_size)
    assert place_boxes(boxes[:, :5], flipped, 0.3).tolist() == [[0, 0.25, 0.5, 0.75, 0.75]]
    off_centre = np.array([[2, 0.0, 0.0, 0.1, 0.5]], np.float32)  # px x 0..20, y 0..50 -> canvas y 50..100
    assert place_boxes(off_centre, flipped, 0.3) == pytest.approx(np.array([[2, 0.9, 0.25, 1.0, 0.5]]))


def test_boxes_leaving_a_crop_are_clipped_or_dropped_by_their_visible_fraction():
    # the crop shows source x 50..150 of a 200x100 image on a 100x100 canvas
    placement = Placement((50.0, 0.0, 100.0, 100.0), (0, 0, 100, 100), (100, 100), False, (200, 100))
    boxes = np.array([
        [3, 0.20, 0.0, 0.30, 1.0],  # x 40..60: half inside -> clipped to 0..10
        [4, 0.00, 0.0, 0.30, 1.0],  # x 0..60: 10 of 60 inside (0.17) -> dropped
        [5, 0.80, 0.2, 0.90, 0.4],  # x 160..180: outside
        [6, 0.40, 0.1, 0.60, 0.9],  # wholly inside
    ], np.float32)
    kept = place_boxes(boxes, placement, 0.3)
    assert kept == pytest.approx(np.array([[3, 0.0, 0.0, 0.1, 1.0], [6, 0.3, 0.1, 0.7, 0.9]]))
    assert place_boxes(boxes, placement, 0.1)[:, 0].tolist() == [3, 4, 6]
    assert place_boxes(boxes, placement, 0.0)[:, 0].tolist() == [3, 4, 6]  # nothing left of 5: always dropped


def test_mxnet_detection_labels_parse_as_imagedetiter_does():
    # header width 4 (A, B, image width, image height), objects of 5; the -1 row is padding
    labels = [4, 5, 640, 480, 1, 0.1, 0.1, 0.5, 0.5, 2, 0.2, 0.3, 0.4, 0.9, -1, -1, -1, -1, -1]
    objects = objects_of(np.array(labels, np.float32), 5)
    assert objects == pytest.approx(np.array([[1, 0.1, 0.1, 0.5, 0.5], [2, 0.2, 0.3, 0.4, 0.9]]))
    assert Detection().max_objects(len(labels)) == 3
    assert padded(objects, 3, 5)[2].tolist() == [-1] * 5
    with pytest.raises(ValueError, match="header width"):
        objects_of(np.array([1.0, 5, 1, 0.1, 0.1, 0.2, 0.2]), 5)
    with pytest.raises(ValueError, match="need a header"):
        objects_of(np.array([3.0]), 5)
    with pytest.raises(ValueError, match="whole objects"):
        objects_of(np.array([2, 5, 1, 0.1, 0.1, 0.2]), 5)
    with pytest.raises(ValueError, match="object_width=5"):
        objects_of(np.array([2, 6, 1, 0.1, 0.1, 0.2, 0.2, 0]), 5)
