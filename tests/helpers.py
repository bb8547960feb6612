"""Shared test helpers: tiny quickstart configs and trained workdirs."""

from configs import jit_quickstart, quickstart


def tiny_config(**overrides):
    """The quickstart config shrunk to a 2-block DiT, 64 images and 4 steps (seconds on CPU)."""
    return _tiny(quickstart.get_config("runlocal"), overrides)


def tiny_flow_config(**overrides):
    """The JiT quickstart (flow family, Spectral Forcing on, 4 classes) shrunk the same way."""
    return _tiny(jit_quickstart.get_config("runlocal"), overrides)


def _tiny(c, overrides):
    c.dataset.num_examples = 64
    c.model_kwargs.update(embed_dim=32, depth=2, num_heads=2)
    c.sample.update(num=4, nfe=3)
    c.checkpoint_every = 2
    c.log_every = 2
    c.sample_every = 4
    c.total_steps = 4
    c.keep_checkpoints = 10
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
