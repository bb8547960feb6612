"""launch/sample_colab.ipynb, executed headless on a checkpoint trained by the test (quickstart config)."""

import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "launch", "sample_colab.ipynb")


@pytest.mark.parametrize(
    "workdir_fixture,sampler,saved",
    [
        ("trained_workdir", "dpm_solver", "dpm_solver_nfe4"),
        ("flow_workdir", "", "heun_nfe4"),
        ("ar_workdir", "", "temperature1"),
    ],
)
def test_notebook_runs_on_a_trained_checkpoint(
    workdir_fixture, sampler, saved, request, monkeypatch
):
    """Diffusion with a sampler chosen in the notebook; JiT (flow family) with the run's own; the
    DCTransformer (autoregressive family) at temperature 1, 1 chunk per sample."""
    nbclient = pytest.importorskip("nbclient")
    trained_workdir = request.getfixturevalue(workdir_fixture)
    monkeypatch.setenv("DCTJAX_WORKDIR", str(trained_workdir))
    monkeypatch.setenv("DCTJAX_SAMPLER", sampler)
    monkeypatch.setenv("DCTJAX_NFE", "4")
    monkeypatch.setenv("DCTJAX_NUM", "4")
    monkeypatch.setenv("DCTJAX_MAX_CHUNKS", "1")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device, as on a Colab CPU runtime
    monkeypatch.setenv("PYTHONPATH", ROOT)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the sample grid and the NFE comparison
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "(4, 32, 32, 3) uint8" in text and "step 4" in text
    assert (trained_workdir / f"notebook_{saved}.png").exists()
