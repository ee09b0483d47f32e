"""docs/quickstart.ipynb runs from top to bottom in a real Jupyter kernel."""

from __future__ import annotations

import os

import nbformat
import pytest
from conftest import MOBILENETV2_NOTOP, REPO, SHARED, _need
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


def _outputs(cell) -> str:
    return "".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for output in cell.get("outputs", [])
    )


@pytest.mark.slow
@pytest.mark.needs_shared
def test_quickstart_notebook_runs_in_a_kernel(monkeypatch):
    _need(SHARED / "datasets" / "flowers17")
    _need(MOBILENETV2_NOTOP)
    monkeypatch.setenv("FEATUREBANK_SHARED", str(SHARED))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:  # one line: which cell failed and why
        pytest.fail(f"a cell of {NOTEBOOK.name} failed: {str(exc).strip().splitlines()[-1]}")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    text = "\n".join(_outputs(cell) for cell in code)
    assert "wrote 150 images, skipped 0" in text
    assert "precision    recall  f1-score   support" in text and "tulip" in text
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs), \
        "the confusion matrix is not shown as an image"
    assert "F1 logreg" in text and "F1 rf" in text  # the side-by-side table of both models
    assert not any(output.get("output_type") == "error" for cell in code for output in cell.outputs)


def test_committed_notebook_keeps_its_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.get("outputs") for cell in code), "run the notebook before committing it"
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs)
    assert os.path.getsize(NOTEBOOK) < 1_000_000
