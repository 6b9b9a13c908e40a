"""notebooks/explore_reconstructions.ipynb runs top to bottom on a finished pipeline run, in this interpreter."""
from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell

from utils import layout

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_reconstructions.ipynb"


def parameters_cell(nb) -> int:
    """Index of the cell tagged ``parameters`` (papermill's convention)."""
    return next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))


def test_parameters_default_to_the_data_folder_and_the_runners_run_name():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    values: dict = {}
    exec(nb.cells[parameters_cell(nb)].source, values)
    assert values["DATA_ROOT"] == "data" and values["RUN"] is None  # None: run_pipeline's own default name
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # stored without outputs


def test_notebook_shows_clips_captions_and_metrics_of_a_finished_run(finished_demo_run):
    root, run = finished_demo_run
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(parameters_cell(nb) + 1, new_code_cell(f"DATA_ROOT = {str(root)!r}\nRUN = {run!r}\nN_CLIPS = 2"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/html", "") for o in outputs)
    evaluation = json.loads(layout.metrics_path(layout.evaluation_dir(root, run)).read_text())
    assert f"run {run}: {evaluation['n_clips']} test clips" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the clips beside their ground truth, the metrics against chance
    captions = json.loads(layout.reconstruction_captions_path(layout.reconstructions_dir(root, run)).read_text())
    first = sorted(captions)[0]
    assert f"{first}  " in text and captions[first] in text  # the decoded caption of a shown clip, printed beside the true ones
    assert "full prediction (predicted latent + decoded caption)" in text  # the oracle table, whatever variants exist
