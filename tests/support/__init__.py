"""Helpers the tests share (fixtures stay in conftest.py files; these are plain imports)."""
