#!/usr/bin/env bash
# recpack end to end on data it generates itself: photos -> pack -> inspect -> verify -> extract.
#   bash tools/demo.sh [NUM_IMAGES]      (default 2000; output in demo/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
images=${1:-2000}
recpack=.venv/bin/recpack

echo "== 1. generate $images ImageNet-like JPEGs cut from real photos (demo/images)"
[ -f demo/images/list.txt ] && [ "$(wc -l < demo/images/list.txt)" -eq "$images" ] \
    || .venv/bin/python tools/corpus.py demo/images --images "$images" --classes 10 --seed 0
echo "== 2. pack them into 16 shuffled shards (demo/packed)"
$recpack pack demo/images/list.txt demo/packed --shards 16 --overwrite
echo "== 3. inspect"
$recpack info demo/packed
echo "== 4. verify every checksum"
$recpack verify demo/packed
echo "== 5. extract one image by its source name"
key=$(sed -n 1p demo/images/list.txt | cut -f1)
$recpack get demo/packed "$key" -o demo/extracted.jpg
cmp demo/extracted.jpg "demo/images/$key" && echo "demo/extracted.jpg is byte-identical to demo/images/$key"
