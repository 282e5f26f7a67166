"""Augmentation-aware extensions: AugSelf targets, heads, loss; CASSLE descriptor and
conditioned projector."""
