"""Dataset analyses behind `launch/analyze_spectrum.py` (spec spectral §5, §6).

Modules: `spectrum` (diffusion as spectral autoregression in its VP form, power-law fits and
crossover frequencies, DCT upsampling against nearest/bilinear/bicubic; pure NumPy/JAX, no I/O
beyond reading a source) and `plots` (the matplotlib figures of its results).
"""

from dctjax.analysis import spectrum

__all__ = ["spectrum"]
