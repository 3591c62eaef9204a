#!/usr/bin/env bash
# Prepare the real data sets that tests and benchmarks read, from ../shared/data into .data/
# (git-ignored). Idempotent; each step is skipped when its output exists. Needs numpy, Pillow and
# soundfile (the project's venv has them): pass its python as $PY.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${RESLEARN_SHARED_DATA:-../shared/data}
DEST=${RESLEARN_DATA_DIR:-.data}
mkdir -p "$DEST"
if [ ! -d "$SHARED" ]; then
  echo "prepare_data: $SHARED not found; nothing to prepare" >&2
  exit 0
fi
[ -f "$DEST/cifar-10-batches-py/test_batch" ] && [ -d "$DEST/cifar10-jpeg/test" ] \
  || "$PY" "$SHARED/prepare_cifar10.py" "$DEST"
[ -d "$DEST/asc-speech-commands" ] && [ -d "$DEST/fsdd/recordings" ] \
  || "$PY" "$SHARED/prepare_speech.py" "$DEST"
[ -d "$DEST/utkface/crop_part1" ] || tar -xf "$SHARED/utkface-crop_part1.tar" -C "$DEST"
# Fashion-MNIST comes from Debian (IDX files under /usr/share/datasets/fashion-mnist/).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
    || echo "prepare_data: could not install dataset-fashion-mnist" >&2
fi
echo "prepare_data: ready in $DEST"
