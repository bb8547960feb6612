"""dctjax: generative image modeling in the DCT (frequency) space, in JAX/Flax."""

__version__ = "0.1.0"
