"""Base methods: one file each, with its heads and its loss."""
