"""Train a diffusion model (DCTdiff or the pixel U-ViT baseline) from a config.

    python launch/train.py --config=configs/quickstart.py --workdir=runs/quickstart
    python launch/train.py --config=configs/dctdiff_afhq512.py --workdir=runs/afhq512
    python launch/train.py --config=configs/dctdiff_cifar10.py:pixel --workdir=runs/cifar_pixel
    python launch/train.py --config=configs/dctdiff_ffhq256.py --workdir=/tmp/x --compile_only

A run resumes from the latest checkpoint in --workdir. Multi-host: set DCTJAX_MULTIHOST=1 (the
launchers in launch/ do) and jax.distributed.initialize() runs first.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dctjax.host_memory import keep_freed_host_memory  # noqa: E402

keep_freed_host_memory()  # before JAX's threads allocate: reuse XLA's per-step block

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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
    from dctjax.train.diffusion_loop import train_and_evaluate

    result = train_and_evaluate(FLAGS.config, FLAGS.workdir, compile_only=FLAGS.compile_only)
    if FLAGS.compile_only:
        print(json.dumps(result, indent=2))
    logging.info("done")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
