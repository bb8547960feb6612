"""Tests for dctjax.data."""
