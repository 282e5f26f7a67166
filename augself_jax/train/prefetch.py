"""Device prefetch: the host-to-device transfer of the next global batches overlaps the step.

JAX dispatches transfers asynchronously, so placing batch k+1 (and k+2, ...) on the
devices while step k runs hides the copy behind the compute; the loop then finds its
batch already on the device. Nothing is reordered or dropped in between: the iterator
yields exactly the host iterator's batches, in order. A batch transferred ahead but not
consumed (the run stops or is preempted) is simply discarded, and since the pipeline's
batch for step k is a pure function of (config, k) and a resume rebuilds it from the
checkpoint's step, a resume never sees the difference.
"""

import collections
from collections.abc import Iterable, Iterator

import jax

from augself_jax.data import global_batch


def device_batches(host_batches: Iterable[dict], mesh: jax.sharding.Mesh,
                   keys: tuple[str, ...], depth: int) -> Iterator[dict]:
    """Global batches (the `keys` of each host batch, sharded over the mesh's data axis),
    with `depth` more already dispatched to the devices than the one being consumed.
    depth 0 transfers each batch only when it is asked for."""
    def to_device(host: dict) -> dict:
        return global_batch.make_global_batch({k: host[k] for k in keys}, mesh)

    ahead: collections.deque = collections.deque()
    for host in host_batches:
        ahead.append(to_device(host))
        if len(ahead) > depth:
            yield ahead.popleft()
    while ahead:  # a finite host iterator: hand out what was transferred ahead
        yield ahead.popleft()
