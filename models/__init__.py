"""Torch modules and model loading (presets live in models/zoo.py)."""
