"""Stop requests: SIGTERM (a TPU VM or SLURM preemption), Ctrl-C, and JAX's multi-host
preemption sync point, turned into "save at the next step boundary and stop".

Multi-process runs agree on the step: JAX's preemption service (started by
`jax.distributed.initialize`) catches SIGTERM on any host and names one sync step for all;
a Ctrl-C, or a SIGTERM where that service is off, is shared by an all-gather of each
process's flag at every step boundary. A second Ctrl-C stops at once (KeyboardInterrupt).
"""

import signal
import threading
from types import FrameType

import jax
import numpy as np


def _jax_preemption_service_running() -> bool:
    from jax._src import distributed

    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class StopRequests:
    """A context manager holding the signal handlers; `should_stop(step)` at each step
    boundary answers the same on every process."""

    def __init__(self) -> None:
        self.reason: str | None = None  # the signal's name once one arrived
        self._previous: dict[int, object] = {}
        self._multi_process = jax.process_count() > 1
        self._jax_sync = self._multi_process and _jax_preemption_service_running()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the save
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            # Where JAX's preemption service runs, SIGTERM is its own (it syncs the hosts).
            signals = (signal.SIGINT,) if self._jax_sync else (signal.SIGINT, signal.SIGTERM)
            for s in signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def should_stop(self, step: int) -> bool:
        """True when the run should save `step` and stop; called at every step boundary
        (JAX's sync point requires every step)."""
        if not self._multi_process:
            return self.reason is not None
        from jax.experimental import multihost_utils

        if self._jax_sync and multihost_utils.reached_preemption_sync_point(step):
            self.reason = self.reason or "SIGTERM"
            return True
        flags = multihost_utils.process_allgather(np.int32(self.reason is not None))
        if np.any(flags) and self.reason is None:
            self.reason = "a stop request on another process"
        return bool(np.any(flags))
