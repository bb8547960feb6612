"""Quickstart for the autoregressive family: a small DCTransformer on the built-in synthetic shapes.

    python launch/train.py --config=configs/dctransformer_quickstart.py --workdir=runs/dctransformer_quickstart

32x32 images as sparse DCT sequences with 4x4 blocks (an 8x8 luma grid, quality 75, values clipped
to +-255): 250-470 elements per image, so chunks of 96 targets with 32 overlap give 3-5 chunks
and the chunk selection, the overlap and the encoder image of earlier chunks are all exercised.
Length filtering with L_max = 383 (the 95th percentile of the training lengths, as
`launch/dct_stats.py` prints it). The 'S' model (hidden 256, 4 heads, 2-3 PAR blocks per stack).
Logged every 50 steps: loss (nats per element), bits per element of the channel / position / value
terms, the bits per subpixel of the drawn chunk overall and by chunk index; every 300 steps the
held-out bits per subpixel of 32 test images, every chunk scored.

Expected on 2 CPU cores (~1 s a step, ~10 minutes): the loss (nats per element) falls from ~16 to
~4.3 by step 100 and ~3.0 by step 600; held-out bits per subpixel ~0.43 at the end (measured:
10.65 / 4.35 / 3.41 / 3.01 at steps 50 / 100 / 300 / 600, held-out 0.482 at 300, 0.429 at 600).
"""

from configs import common


def get_config(arg=None):
    c = common.dctransformer_config(
        name="dctransformer_quickstart", dataset="synthetic", column="lsun", max_length=383
    )
    c.dataset.num_examples = 50_000
    c.resolution = 32
    c.representation_kwargs.update(
        block_size=4, quality=75, clip=255, chunk_size=96, overlap=32, max_length=383
    )
    c.model_kwargs.update(size="S", dropout=0.0, downsample=(2, 1))
    c.batch_size = 16
    c.total_tokens = None
    c.total_steps = 600
    c.optim.update(lr=1e-3, warmup_steps=100)
    c.input.worker_count = 2
    c.log_every = 50
    c.checkpoint_every = 300
    c.eval.update(every=300, split="test", num_images=32, batch_size=32)
    c.sample_every = 300
    c.sample.update(num=16)
    return common.apply_dctransformer_variant(c, arg)
