#!/usr/bin/env bash
# Creates .venv-ww (Python 3.11) with weightwatcher 0.7.7 and a CPU torch, for
# benchmarks/bench_analyze_vs_weightwatcher.py. Kept apart from .venv because hteval needs Python 3.12 and
# numpy 2.5, while the only torch wheel on this machine's disk is for Python 3.11.
# Idempotent: exits at once when the venv already imports the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-ww
PYTHON="${WW_PYTHON:-$HOME/.pyenv/versions/3.11.7/bin/python}"

check() {
    "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
from importlib.metadata import version
assert version("weightwatcher") == "0.7.7"
assert version("torch").split("+")[0] == "2.13.0"
import safetensors.torch  # noqa: F401
EOF
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "$VENV already built"
    exit 0
fi
if ! "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
    echo "need Python 3.11 at $PYTHON (set WW_PYTHON to another 3.11 interpreter)" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch is pinned first and alone: pip takes 2.13.0 (CPU) from this machine's disk, whereas any range that
# admits another release would download a multi-GB CUDA build.
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
# Every package pinned, weightwatcher's transitive dependencies included, so that timings compare like with
# like across machines; these are what pip resolved for weightwatcher==0.7.7 on Python 3.11.
"$VENV/bin/python" -m pip install --quiet \
    torch==2.13.0 \
    weightwatcher==0.7.7 \
    safetensors==0.8.0 \
    numpy==2.4.6 \
    scipy==1.17.1 \
    pandas==3.1.1 \
    matplotlib==3.11.2 \
    matplotlib-inline==0.2.2 \
    powerlaw==2.0.0 \
    scikit-learn==1.9.1 \
    tqdm==4.70.1 \
    joblib==1.6.0 \
    cloudpickle==3.1.3 \
    narwhals==2.29.0 \
    threadpoolctl==3.8.0 \
    mpmath==1.3.0 \
    contourpy==1.3.3 \
    cycler==0.12.1 \
    fonttools==4.68.0 \
    kiwisolver==1.5.1 \
    packaging==26.4 \
    pillow==13.0.0 \
    pyparsing==3.3.3 \
    python-dateutil==4.0.0 \
    traitlets==5.16.1 \
    tzdata==2026.6
check || { echo "$VENV built but does not import weightwatcher 0.7.7 with torch 2.13.0" >&2; exit 1; }
echo "$VENV ready"
