"""Train state, sharded step, loop, optimizers, logging."""
