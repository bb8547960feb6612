"""FID evaluation inside the trainer (config.eval): periodic, logged, kept as the best checkpoint."""

import json

import numpy as np
import pytest

from dctjax.data.synthetic import SyntheticShapes
from dctjax.eval import inception, metrics
from dctjax.train import checkpoint, loop
from dctjax.train import metrics as train_metrics
from tests.eval.test_metrics import fake_feature_fn
from tests.helpers import tiny_config, tiny_flow_config


@pytest.fixture()
def fake_inception(monkeypatch):
    fn = fake_feature_fn(pool3_dim=8, spatial_dim=4)
    calls = []

    def load(weights=None, *, cache_dir=None, batch_size=50, mesh=None):
        calls.append(dict(weights=weights, batch_size=batch_size))
        return fn

    monkeypatch.setattr(inception, "load_inception", load)
    return fn, calls


def _reference(path, fn, n=16):
    src = SyntheticShapes(32, num_examples=n)
    images = np.stack([src[i]["image"] for i in range(n)])
    stats = metrics.compute_feature_stats([images], fn, max_keep=n)
    metrics.save_reference(
        metrics.FIDReference.from_feature_stats(stats, dict(dataset="synthetic", resolution=32)),
        path,
    )


@pytest.mark.parametrize(
    "make_config,sampler", [(tiny_config, "ddim"), (tiny_flow_config, "euler_flow")]
)
def test_fid_every_k_steps_logged_and_best_checkpoint_kept(
    tmp_path, fake_inception, monkeypatch, make_config, sampler
):
    """For the diffusion family (DCTdiff) and the flow family (JiT + SF, sampled with CFG)."""
    fn, calls = fake_inception
    monkeypatch.setattr(train_metrics, "clu_writers_available", lambda: False)  # metrics.jsonl
    _reference(tmp_path / "ref.npz", fn)
    c = make_config(keep_checkpoints=1, checkpoint_every=100, sample_every=100, total_steps=4)
    c.eval.update(every=2, start=2, num_samples=6, batch_size=8, nfe=2, sampler=sampler)
    c.eval.reference = str(tmp_path / "ref.npz")
    workdir = tmp_path / "run"
    loop.train_and_evaluate(c, str(workdir))
    assert calls and calls[0]["batch_size"] == 8  # rounded to a multiple of the 8 devices
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    evals = {r["step"]: r["scalars"] for r in rows if "eval/fid" in r.get("scalars", {})}
    assert sorted(evals) == [2, 4]
    assert all(np.isfinite(r["eval/fid"]) and r["eval/num_samples"] == 6 for r in evals.values())
    with checkpoint.Checkpointer(workdir, handle_sigterm=False) as ck:
        kept = ck.all_steps()
    best = min(evals, key=lambda s: evals[s]["eval/fid"])
    assert best in kept  # keep=1 keeps the latest; the best-FID one is kept too


def test_missing_reference_fails_at_start(tmp_path, fake_inception):
    c = tiny_config()
    c.eval.update(every=2, reference=str(tmp_path / "nope.npz"))
    with pytest.raises(FileNotFoundError, match="--compute_ref"):
        loop.train_and_evaluate(c, str(tmp_path / "run"))
