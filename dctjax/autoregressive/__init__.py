"""Autoregressive DCTransformer training and sampling helpers.

Modules: `chunking` (chunk selection, slot layout with overlap, encoder input, sequence-length
filtering; host-side NumPy for the data pipeline and a jit version for padded device batches).
"""
