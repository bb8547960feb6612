"""Data: sources (synthetic, tfds, prepared folders), preparation, grain pipeline, statistics."""
