"""List-file parsing: every accepted layout, and one-line errors that name the line."""

import os

import pytest

from recpack.errors import ListFileError, RecpackError
from recpack.pack.sources import open_source, parse_list_line, read_list, scan_image_folder

WHERE = ("list.txt", 7)


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a/b.jpg\t3\n", ("a/b.jpg", (3.0,), None)),
        ("my photo.jpg\t1\t0.5\n", ("my photo.jpg", (1.0, 0.5), None)),
        ("img.jpg\tmask.png\n", ("img.jpg", (), "mask.png")),
        ("img.jpg\t2\tmasks/m 1.png\n", ("img.jpg", (2.0,), "masks/m 1.png")),
        ("12\t4\tdir/x.jpg\n", ("dir/x.jpg", (4.0,), None)),
        ("12\t1\t0\t1\tdir/x.jpg\n", ("dir/x.jpg", (1.0, 0.0, 1.0), None)),
        ("a/b.jpg 3\n", ("a/b.jpg", (3.0,), None)),
        ("a/b.jpg\n", ("a/b.jpg", (), None)),
        ("a/b.jpg\t3\r\n", ("a/b.jpg", (3.0,), None)),
    ],
)
def test_accepted_layouts(line, expected):
    assert parse_list_line(line, WHERE) == expected


@pytest.mark.parametrize("line", ["\n", "   \n", "# comment\n", "  # indented comment\n"])
def test_blank_and_comment_lines_are_skipped(line):
    assert parse_list_line(line, WHERE) is None


@pytest.mark.parametrize(
    "line, message",
    [
        ("a.jpg cat\n", "label 'cat' is not a number (a path with spaces needs a tab before its label)"),
        ("a.jpg\tcat\n", "label 'cat' is not a number"),
        ("a.jpg\tx\t2\n", "label 'x' is not a number"),
        ("\t3\n", "no image path"),
        ("my photo.jpg\n", "label 'photo.jpg' is not a number (a path with spaces needs a tab before its label)"),
        ("a.jpg\tnan\n", "label 'nan' is not a finite number"),
        ("a.jpg\t1\t-inf\n", "label '-inf' is not a finite number"),
        ("a.jpg\t100000000000\n",
         "label '100000000000' is too large to be stored exactly (labels are float32: whole numbers up to 16,777,216)"),
        ("a.jpg\t1e300\n",  # no overflow warning on the way
         "label '1e300' is too large to be stored exactly (labels are float32: whole numbers up to 16,777,216)"),
    ],
)
@pytest.mark.filterwarnings("error")
def test_bad_lines_name_file_and_line(line, message):
    with pytest.raises(ListFileError) as caught:
        parse_list_line(line, WHERE)
    assert str(caught.value) == f"list.txt:7: {message}"


def test_read_list_resolves_against_root_and_keeps_keys(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# a comment\na.jpg\t1\n\n/abs/b.jpg\t2\n")
    source = read_list(str(listing))
    assert [(i.line, i.key, i.path, i.labels) for i in source] == [
        (2, "a.jpg", str(tmp_path / "a.jpg"), (1.0,)),
        (4, "/abs/b.jpg", "/abs/b.jpg", (2.0,)),
    ]
    assert read_list(str(listing), root="/data").item(0).path == "/data/a.jpg"


def test_root_comment_sets_default_root(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# root: images\na.jpg\t1\n")
    assert read_list(str(listing)).item(0).path == str(tmp_path / "images" / "a.jpg")


def test_bad_line_number_counts_blank_and_comment_lines(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg 1\n\n# c\nb.jpg one\n")
    with pytest.raises(ListFileError, match=r"list.txt:4: label 'one'"):
        read_list(str(listing))


def test_non_utf8_list_is_a_line_error(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.jpg 1\n\xff\xfe.jpg 2\n")
    with pytest.raises(ListFileError, match=r":2: not UTF-8"):
        read_list(str(listing))


def test_empty_or_missing_list_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(RecpackError, match="names no images"):
        read_list(str(tmp_path / "empty.txt"))
    with pytest.raises(RecpackError, match="no such list file"):
        read_list(str(tmp_path / "missing.txt"))


def test_image_folder_labels_by_sorted_class_name(tmp_path):
    for name in ["zebra/1.jpg", "ant/2.JPG", "ant/sub/3.png", "ant/notes.txt", "ant/.hidden.jpg", ".git/x.jpg"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    source = open_source(str(tmp_path))
    assert source.classes == ("ant", "zebra")
    assert [(i.key, i.labels) for i in source] == [
        (os.path.join("ant", "2.JPG"), (0.0,)),
        (os.path.join("ant", "sub", "3.png"), (0.0,)),
        (os.path.join("zebra", "1.jpg"), (1.0,)),
    ]


def test_image_folder_without_classes_is_an_error(tmp_path):
    with pytest.raises(RecpackError, match="no class subfolders"):
        scan_image_folder(str(tmp_path))


def test_lines_must_agree_on_the_number_of_labels(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\t1\nb.jpg\t1\t2\t3\n")
    with pytest.raises(ListFileError, match=r"list.txt:2: 3 labels, but the lines before have 1"):
        read_list(str(listing))


def test_a_single_label_is_a_whole_class_index_while_vectors_may_hold_fractions(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\t0.5\t16777216\n")
    assert read_list(str(listing)).labels[0] == (0.5, 16777216.0)
    listing.write_text("a.jpg\t1\nb.jpg\t1.5\n")
    with pytest.raises(ListFileError, match=r"list.txt:2: label 1.5 is not a whole number \(a single label is a class index"):
        read_list(str(listing))


@pytest.mark.parametrize(
    "lines, message",
    [
        ("a.jpg\t1\ta.png\nb.jpg\t2\n", "list.txt:2: no mask, but the lines before have one"),
        ("a.jpg\t1\nb.jpg\t2\tb.png\n", "list.txt:2: a mask, but the lines before have none"),
    ],
)
def test_lines_must_agree_on_having_a_mask(tmp_path, lines, message):
    listing = tmp_path / "list.txt"
    listing.write_text(lines)
    with pytest.raises(ListFileError) as caught:
        read_list(str(listing))
    assert str(caught.value).endswith(message)


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\ufeffa.jpg\t1\n", encoding="utf-8")
    assert list(read_list(str(listing)).keys) == ["a.jpg"]


def test_an_empty_class_folder_is_an_error_not_a_label(tmp_path):
    (tmp_path / "ant").mkdir()
    (tmp_path / "bee").mkdir()
    (tmp_path / "bee" / "1.jpg").write_bytes(b"x")
    with pytest.raises(RecpackError, match=r"ant: class folder holds no image files"):
        scan_image_folder(str(tmp_path))


def test_a_packed_dataset_is_not_taken_for_an_image_folder(tmp_path):
    (tmp_path / "keys.lmdb").mkdir()
    (tmp_path / "recpack.json").write_text("{}")
    with pytest.raises(RecpackError, match=r"a packed recpack dataset, not an image folder"):
        scan_image_folder(str(tmp_path))


def test_detection_lists_may_hold_different_numbers_of_objects(tmp_path):
    """im2rec's detection .lst: [A=2, B=5, objects...] per line, as many objects as the image has."""
    lines = ["0\t2\t5\t1\t0.1\t0.1\t0.4\t0.5\ta.jpg", "1\t2\t5\t0\t0.2\t0.2\t0.3\t0.3\t3\t0.5\t0.5\t0.9\t0.8\tb.jpg",
             "2\t2\t5\tc.jpg"]
    (tmp_path / "det.lst").write_text("\n".join(lines) + "\n")
    source = read_list(str(tmp_path / "det.lst"))
    assert [len(labels) for labels in source.labels] == [7, 12, 2]
    (tmp_path / "mixed.lst").write_text(lines[0] + "\n3\t2\t6\t1\t0.1\t0.1\t0.4\t0.5\t0\td.jpg\n")
    with pytest.raises(ListFileError, match="8 labels, but the lines before have 7"):
        read_list(str(tmp_path / "mixed.lst"))
