"""augself_jax: augmentation-aware self-supervised learning (AugSelf, CASSLE) in JAX."""
