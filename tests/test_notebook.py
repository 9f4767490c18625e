"""The walkthrough notebook runs from top to bottom, and is committed without outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def _read():
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(NOTEBOOK, as_version=4)


def _text(cell) -> str:
    """The stream output and plain-text results of one executed code cell."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_committed_notebook_is_valid_and_has_no_outputs():
    import nbformat

    nb = _read()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and nb.metadata["kernelspec"]["name"] == "python3"
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert dirty == [], (
        f"cells {dirty} of {NOTEBOOK.name} hold outputs or execution counts; clear them before committing"
        " (e.g. `jupyter nbconvert --clear-output --inplace notebooks/walkthrough.ipynb`)."
    )


@pytest.mark.slow
def test_notebook_runs_and_shows_its_results(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    # The kernel inherits this environment: no display needed, and its temporary folders land in tmp_path.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = _read()
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "".join(_text(c) for c in code)
    images = sum("image/png" in out.get("data", {}) for c in code for out in c.outputs)
    assert images == 3  # loss and learning-rate curves, PR curves, the overfitting run
    assert "stopped after" in text and "val/auroc" in text
    gamma_table = next(_text(c) for c in code if "gamma" in _text(c) and "AUROC" in _text(c))
    columns = ("AP", "ECE raw", "ECE calibrated")
    assert all(col in gamma_table for col in columns) and len(gamma_table.splitlines()) >= 6
    assert "[overfitting]" in text and "--model.dropout" in text
    assert "threshold chosen on validation" in text and "precision" in text and "recall" in text
