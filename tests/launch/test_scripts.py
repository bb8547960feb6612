"""The pod and cluster launchers: valid bash, and their dry runs print the expected commands."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("script", ["launch/tpu_pod.sh", "launch/gpu_slurm.sbatch"])
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", os.path.join(ROOT, script)], check=True)


def _run(args, env=None):
    return subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout.splitlines()


def test_tpu_pod_dry_run_copy_and_pull():
    out = _run([
        "bash", "launch/tpu_pod.sh", "--tpu=pod", "--zone=us-central2-b", "--project=p",
        "--config=configs/dctdiff_afhq512.py", "--workdir=gs://b/afhq", "--dry-run",
        "--", "--config.batch_size=256",
    ])  # fmt: skip
    assert len(out) == 3
    assert (
        out[0].startswith("gcloud compute tpus tpu-vm scp --recurse") and "--worker=all" in out[0]
    )
    start = out[1].replace("\\", "")
    assert start.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-central2-b --project=p")
    assert "--worker=all" in start and "DCTJAX_MULTIHOST=1" in start
    assert "launch/train.py --config=configs/dctdiff_afhq512.py --workdir=gs://b/afhq" in start
    assert "--config.batch_size=256" in start
    assert "--worker=0" in out[2] and "tail" in out[2]
    out = _run([
        "bash", "launch/tpu_pod.sh", "--tpu=pod", "--zone=z", "--config=c.py", "--workdir=w",
        "--repo=https://example.org/dctjax.git", "--dry-run",
    ])  # fmt: skip
    assert "git" in out[0] and "clone" in out[0].replace("\\", "") and "scp" not in out[0]


def test_tpu_pod_requires_arguments():
    r = subprocess.run(
        ["bash", "launch/tpu_pod.sh", "--tpu=x"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode != 0 and "missing --zone" in r.stderr


def test_slurm_dry_run():
    out = _run(
        ["bash", "launch/gpu_slurm.sbatch", "configs/c.py", "runs/c", "--config.seed=1"],
        env={"DRY_RUN": "1", "SLURM_NTASKS": "4"},
    )
    assert out[0] == "JAX_COORDINATOR_ADDRESS=localhost:12355 JAX_NUM_PROCESSES=4"
    cmd = out[1].replace("\\", "")
    assert cmd.startswith("srun --kill-on-bad-exit=1 bash -c JAX_PROCESS_ID=$SLURM_PROCID")
    assert "--config=configs/c.py --workdir=runs/c --config.seed=1" in cmd


@pytest.mark.parametrize(
    "args,message",
    [
        (["--config.model=resnet"], "error: unknown model 'resnet'; choose one of"),
        (
            ["--config.family=gan"],
            "error: unknown family 'gan'; choose one of ['autoencoder', 'autoregressive', 'diffusion', 'flow']",
        ),
    ],
)
def test_train_user_mistakes_exit_2_with_the_message(tmp_path, args, message):
    """A user's mistake ends launch/train.py with its message and exit code 2, no traceback."""
    r = subprocess.run(
        [sys.executable, "launch/train.py", "--config=configs/quickstart.py",
         f"--workdir={tmp_path / 'run'}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "XLA_FLAGS": ""},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
