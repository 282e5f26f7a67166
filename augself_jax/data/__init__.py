"""Datasets, augmentation ops that record their parameters, the two-view pipeline."""
