"""Shared, model-free helpers: dataset specs, paths, ROI sets, IO, video and metrics."""
