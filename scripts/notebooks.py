"""Build the notebooks from their sources and run them top to bottom.

Usage:
    python scripts/notebooks.py            # build notebooks/*.ipynb from notebooks/src/*.py and run them in place
    python scripts/notebooks.py --reduced --out DIR   # CI: small epochs and few draws, executed copies in DIR

Sources are plain Python in the percent format (`# %%` starts a code cell, `# %% [markdown]` a markdown cell whose
lines are comments), so they diff and lint like code; the committed .ipynb files hold the outputs of a full run.
Reduced mode sets HTEVAL_NOTEBOOKS_REDUCED=1, which each notebook reads to shrink its work; a notebook that raises
fails the run, with the cell and the error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
NOTEBOOKS = ROOT / "notebooks"
REDUCED_VARIABLE = "HTEVAL_NOTEBOOKS_REDUCED"


def build(source: Path) -> nbformat.NotebookNode:
    """A notebook from a percent-format source."""
    cells, kind, lines = [], None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text:
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.removeprefix("#"))
        elif kind is not None:
            lines.append(line)
    flush()
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def run(notebook: nbformat.NotebookNode, *, reduced: bool, timeout: int = 1800) -> nbformat.NotebookNode:
    """Execute top to bottom in a fresh kernel started from the repository root."""
    previous = os.environ.get(REDUCED_VARIABLE)
    os.environ[REDUCED_VARIABLE] = "1" if reduced else "0"
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if previous is None:
            os.environ.pop(REDUCED_VARIABLE, None)
        else:
            os.environ[REDUCED_VARIABLE] = previous
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names without suffix (default: all)")
    parser.add_argument("--reduced", action="store_true", help="small epochs and few draws (what CI runs)")
    parser.add_argument("--out", type=Path, help="write executed notebooks here (default: notebooks/, in place)")
    args = parser.parse_args(argv)
    sources = sorted(SOURCES.glob("*.py"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names]
    out = args.out or NOTEBOOKS
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        start = time.perf_counter()
        notebook = run(build(source), reduced=args.reduced)
        nbformat.write(notebook, out / f"{source.stem}.ipynb")
        print(f"{source.stem}: ran in {time.perf_counter() - start:.0f} s ({'reduced' if args.reduced else 'full'})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
