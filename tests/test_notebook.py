"""notebooks/betas_into_indiv_files.ipynb runs top to bottom on a tiny demo, in this interpreter."""
from __future__ import annotations

import sys
from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "betas_into_indiv_files.ipynb"


def test_notebook_runs_and_reads_back_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell("import sys\nprint(sys.prefix)"))
    # "python3" is the kernel of the environment that runs the tests: jupyter_client starts
    # it with sys.executable; the last cell checks it runs in this environment (sys.prefix).
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells if cell.cell_type == "code"]
    assert outputs[-1].strip() == sys.prefix
    assert "identical to the prepared array" in outputs[-2]
    assert (tmp_path / "betas_cifti_demo" / "sub01" / "indiv_npys").is_dir()
    assert len(list((tmp_path / "betas_cifti_demo" / "sub01").glob("indiv_npys/*/*_rep*.npy"))) == 38
