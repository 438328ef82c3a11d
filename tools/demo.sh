#!/usr/bin/env bash
# recpack end to end on data it generates itself: photos -> pack -> inspect -> verify -> read -> measure.
#   bash tools/demo.sh [NUM_IMAGES] [DIR]      (default 2000 images in demo/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
images=${1:-2000}
dir=${2:-demo}
recpack=.venv/bin/recpack
python=.venv/bin/python

echo "== 1. generate $images ImageNet-like JPEGs cut from real photos ($dir/images)"
[ -f "$dir/images/list.txt" ] && [ "$(wc -l < "$dir/images/list.txt")" -eq "$images" ] \
    || $python tools/corpus.py "$dir/images" --images "$images" --classes 10 --seed 0
echo "== 2. pack them into 16 shuffled shards ($dir/packed)"
$recpack pack "$dir/images/list.txt" "$dir/packed" --shards 16 --overwrite
echo "== 3. inspect"
$recpack info "$dir/packed"
echo "== 4. verify every checksum"
$recpack verify "$dir/packed"
echo "== 5. extract one image by its source name"
key=$(sed -n 1p "$dir/images/list.txt" | cut -f1)
$recpack get "$dir/packed" "$key" -o "$dir/extracted.jpg"
cmp "$dir/extracted.jpg" "$dir/images/$key" && echo "$dir/extracted.jpg is byte-identical to $dir/images/$key"
echo "== 6. read one shuffled epoch: decode + RandomResizedCrop 224 + flip, batches of 256"
$python - "$dir/packed" <<'PY'
import sys, time
from recpack import Augment, RecordDataset
dataset = RecordDataset(sys.argv[1], batch_size=256, augment=Augment(size=224))
started, count = time.perf_counter(), 0
for images, labels in dataset:
    count += len(images)
print(f"{count} images in {len(dataset)} batches of {tuple(images.shape[1:])} {images.dtype}: "
      f"{count / (time.perf_counter() - started):.0f} images/s")
PY
if $recpack bench --help >/dev/null 2>&1; then
    echo "== 7. measure: raw reads, checksums, decode, cold (its files evicted from the page cache before each stage)"
    $recpack bench "$dir/packed" --cold
fi
