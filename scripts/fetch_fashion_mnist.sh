#!/usr/bin/env bash
# Fashion-MNIST for the notebooks, from Debian's dataset-fashion-mnist package (pinned version), unpacked into
# data/fashion-mnist/ without installing anything system-wide. Idempotent: does nothing when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="0.0~git20200523.55506a9-1"
target=data/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=0
for f in "${files[@]}"; do [ -s "$target/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download "dataset-fashion-mnist=$VERSION" >/dev/null 2>&1); then
    echo "could not download Debian's dataset-fashion-mnist=$VERSION with apt-get; the notebooks need it" >&2
    exit 1
fi
dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/root"
mkdir -p "$target"
for f in "${files[@]}"; do cp "$work/root/usr/share/datasets/fashion-mnist/$f" "$target/$f"; done
echo "Fashion-MNIST in $target"
