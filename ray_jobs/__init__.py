"""Thin Ray layer: Ray Data preprocessing, Ray Train stages, evaluation. Run as
``python -m ray_jobs.<job> --config F key=value ...`` or through ``ray job submit``."""
