"""Train a model of any family (DCTdiff, the pixel U-ViT, JiT + Spectral Forcing) from a config.

    python launch/train.py --config=configs/quickstart.py --workdir=runs/quickstart
    python launch/train.py --config=configs/jit_quickstart.py --workdir=runs/jit_quickstart
    python launch/train.py --config=configs/dctdiff_afhq512.py --workdir=runs/afhq512
    python launch/train.py --config=configs/dctdiff_cifar10.py:pixel --workdir=runs/cifar_pixel
    python launch/train.py --config=configs/dctdiff_ffhq256.py --workdir=/tmp/x --compile_only

A run resumes from the latest checkpoint in --workdir. A mistake in the config or the data set-up
ends the command with its message and exit code 2. Multi-host: set DCTJAX_MULTIHOST=1 (the
launchers in launch/ do) and jax.distributed.initialize() runs first.
"""

import json

from dctjax.host_memory import keep_freed_host_memory

keep_freed_host_memory()  # before JAX's threads allocate: reuse XLA's per-step block

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dctjax.errors import run_main  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (with an optional :variant).")
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and samples go here.", required=True)
flags.DEFINE_bool("compile_only", False, "Compile the train step, print memory and FLOPs, exit.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from dctjax.train import sharding

    sharding.maybe_initialize_distributed()
    import jax

    jax.config.update("jax_threefry_partitionable", True)
    from dctjax.train.loop import train_and_evaluate

    result = train_and_evaluate(FLAGS.config, FLAGS.workdir, compile_only=FLAGS.compile_only)
    if FLAGS.compile_only:
        print(json.dumps(result, indent=2))
    logging.info("done")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(lambda argv: run_main(main, argv))
