"""Pretraining: `loop.main(config, workdir)` is main.py's one call (`loop.train` for
in-process callers, which returns the final state).

mesh.py        the ('data', 'model') device mesh and shardings
optimizers.py  SGD / LARS / AdamW, lr = base_lr * batch / 256, cosine + warm-up
state.py       TrainState (step, params, rest, opt_state) over NNX split state
step.py        the pure jitted step: photometric ops, loss, update, momentum targets
monitor.py     the kNN monitor (evaluation's feature extractor and `knn` protocol, k = 1)
loop.py        resume, step, log interval means, monitor, last-K and best checkpoints
               (augself_jax/checkpoints/manager.py)
resume_contract.py  the config fields a resume must keep (recorded in each checkpoint)
preemption.py  SIGTERM / Ctrl-C / JAX's multi-host sync point -> save at the next step
validate.py    the trainer's config checks
"""
