"""Every notebook is stored in the one JSON layout Jupyter writes (nbformat's own writer), without
outputs, so that the first save in Jupyter changes no cell and a diff shows only what was edited."""
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_as_jupyter_writes_it(path):
    text = path.read_text(encoding="utf-8")
    notebook = nbformat.reads(text, as_version=4)
    assert text == nbformat.writes(notebook) + "\n", (
        f"{path.name} is not in Jupyter's layout: rewrite it with "
        "python -c \"import nbformat, sys; p = sys.argv[1]; nbformat.write(nbformat.read(p, 4), p)\" " + str(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {index} holds outputs"
