"""Shared test helpers: tiny quickstart configs and trained workdirs."""

import numpy as np

from configs import autoencoder_quickstart, dctransformer_quickstart, jit_quickstart, quickstart


def tiny_config(**overrides):
    """The quickstart config shrunk to a 2-block DiT, 64 images and 4 steps (seconds on CPU)."""
    return _tiny(quickstart.get_config("runlocal"), overrides)


def tiny_flow_config(**overrides):
    """The JiT quickstart (flow family, Spectral Forcing on, 4 classes) shrunk the same way."""
    return _tiny(jit_quickstart.get_config("runlocal"), overrides)


def tiny_ar_config(**overrides):
    """The DCTransformer quickstart's `runlocal` variant (autoregressive family): 32 px synthetic
    images as 4x4-block sparse sequences, chunks of 48 targets + 16 overlap, model size 'T'."""
    c = dctransformer_quickstart.get_config("runlocal")
    c.total_steps = 4
    c.optim.warmup_steps = 1
    c.checkpoint_every = 2
    c.log_every = 2
    c.keep_checkpoints = 10
    return _apply(c, overrides)


def tiny_ae_config(**overrides):
    """The autoencoder quickstart's `runlocal` variant: 32 px shapes to 16x16x4 latents (size 'T'),
    L1 + KL, the ESM loss and a PatchGAN (ndf 8, 2 layers) from step 2, 4 steps."""
    c = autoencoder_quickstart.get_config("runlocal,gan,esm")
    c.autoencoder.kl_weight = 1e-6
    c.autoencoder.gan.start = 2
    c.dataset.num_examples = 64
    c.total_steps = 4
    c.checkpoint_every = 2
    c.log_every = 2
    c.keep_checkpoints = 10
    return _apply(c, overrides)


def ar_batch(config, n: int, seed: int = 0) -> dict:
    """n training chunks of `config`'s representation from synthetic images, stacked per field
    (the pipeline's host transform; images the length filtering drops are skipped)."""
    from dctjax import representations
    from dctjax.data import sources

    rep = representations.from_config(config)
    src = sources.make_source(
        "synthetic", "train", resolution=config.resolution, num_examples=4 * n
    )
    rng = np.random.default_rng(seed)
    items, i = [], 0
    while len(items) < n:
        ex = src[i]
        i += 1
        out = rep.training_example(ex["image"], rng)
        if out is not None:
            items.append({**out, "label": np.int32(ex["label"])})
    return {k: np.stack([x[k] for x in items]) for k in items[0]}


def _tiny(c, overrides):
    c.dataset.num_examples = 64
    c.model_kwargs.update(embed_dim=32, depth=2, num_heads=2)
    c.sample.update(num=4, nfe=3)
    c.checkpoint_every = 2
    c.log_every = 2
    c.sample_every = 4
    c.total_steps = 4
    c.keep_checkpoints = 10
    return _apply(c, overrides)


def _apply(c, overrides):
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c
