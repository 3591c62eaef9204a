#!/usr/bin/env bash
# Prepare the real data sets that the demo, tests and benchmarks read. Idempotent; each step is
# skipped when its output exists. Needs numpy, Pillow and soundfile (the project's venv has
# them): pass its python as $PY.
# - From ../shared/data (the project's copies; absent on a user's machine) into .data/ (git-ignored).
# - Debian's Fashion-MNIST (/usr/share/datasets/fashion-mnist/), installed with apt-get when run
#   as root: the demo's data on a machine with no CIFAR-10, so this step runs with or without
#   ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${RESLEARN_SHARED_DATA:-../shared/data}
DEST=${RESLEARN_DATA_DIR:-.data}
FASHION=${RESLEARN_SYSTEM_DATASETS:-/usr/share/datasets}/fashion-mnist/train-images-idx3-ubyte.gz
mkdir -p "$DEST"
if [ -d "$SHARED" ]; then
  [ -f "$DEST/cifar-10-batches-py/test_batch" ] && [ -d "$DEST/cifar10-jpeg/test" ] \
    || "$PY" "$SHARED/prepare_cifar10.py" "$DEST"
  [ -d "$DEST/asc-speech-commands" ] && [ -d "$DEST/fsdd/recordings" ] \
    || "$PY" "$SHARED/prepare_speech.py" "$DEST"
  [ -d "$DEST/utkface/crop_part1" ] || tar -xf "$SHARED/utkface-crop_part1.tar" -C "$DEST"
  if [ -f "$SHARED/tiny-imagenet-50.tar.gz" ] && [ ! -d "$DEST/tiny-imagenet-50" ]; then
    tar -xzf "$SHARED/tiny-imagenet-50.tar.gz" -C "$DEST"
  fi
else
  echo "prepare_data: $SHARED not found; only Debian's Fashion-MNIST is prepared"
fi
if [ -f "$FASHION" ]; then
  echo "prepare_data: Fashion-MNIST found in $(dirname "$FASHION")"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "prepare_data: Fashion-MNIST not installed and apt-get cannot run here (needs root on Debian):" \
       "the demo will look for CIFAR-10 instead" >&2
else
  echo "prepare_data: installing Debian's dataset-fashion-mnist with apt-get"
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
    || echo "prepare_data: apt-get could not install dataset-fashion-mnist" >&2
fi
echo "prepare_data: ready in $DEST"
