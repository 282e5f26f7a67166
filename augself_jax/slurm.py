"""Which of a SLURM node's GPUs this process drives.

JAX's SLURM auto-detection gives each process `local_device_ids=[SLURM_LOCALID]`, one GPU
per process. That is right with one task per GPU and wrong with one task per node (the
launch script's layout, so that one tf.data pipeline feeds all of a node's GPUs): 7 of 8
GPUs would sit idle. Here the node's visible GPUs are split evenly among its tasks, which
gives every task all of them with one task per node and `[SLURM_LOCALID]` with one per GPU.
"""

import os
import re
from collections.abc import Mapping


def tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """This node's entry of SLURM's compressed per-node task list: "2(x3),1" means 2, 2, 2, 1."""
    counts: list[int] = []
    for item in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if match is None:
            raise ValueError(f"unreadable SLURM tasks-per-node list {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_index]


def visible_gpu_count(environ: Mapping[str, str]) -> int | None:
    """GPUs SLURM gave this step on this node (CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    on_node = environ.get("SLURM_GPUS_ON_NODE", "").strip()
    return int(on_node) if on_node.isdigit() else None


def local_device_ids(environ: Mapping[str, str] | None = None) -> list[int] | None:
    """This task's share of the node's GPUs (indices among the visible ones), or None outside a
    SLURM step with GPUs (then JAX's own default applies)."""
    env = os.environ if environ is None else environ
    needed = ("SLURM_JOB_ID", "SLURM_LOCALID", "SLURM_NODEID")
    if not all(k in env for k in needed) or env.get("JAX_LOCAL_DEVICE_IDS"):
        return None  # not SLURM, or the user chose the devices (JAX reads that variable)
    gpus = visible_gpu_count(env)
    if not gpus:
        return None
    if env.get("SLURM_GPUS_PER_TASK"):
        return list(range(gpus))  # SLURM bound GPUs to each task: all visible ones are ours
    layout = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1"
    tasks = tasks_on_node(layout, int(env["SLURM_NODEID"]))
    per_task = gpus // tasks
    if per_task == 0:
        return None  # more tasks than GPUs: leave it to JAX, which will say so
    first = int(env["SLURM_LOCALID"]) * per_task
    return list(range(first, first + per_task))
