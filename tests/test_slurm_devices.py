"""augself_jax.slurm: each SLURM task's share of its node's GPUs, for every task layout."""

import pytest

from augself_jax.slurm import local_device_ids, tasks_on_node


def task(node: int, local: int, layout: str, **extra: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "7", "SLURM_NODEID": str(node), "SLURM_LOCALID": str(local),
            "SLURM_STEP_TASKS_PER_NODE": layout, **extra}


def test_tasks_on_node_reads_the_compressed_list():
    assert [tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    assert tasks_on_node("8", 0) == 8
    with pytest.raises(ValueError, match="unreadable"):
        tasks_on_node("two", 0)


EIGHT = "0,1,2,3,4,5,6,7"


@pytest.mark.parametrize("tasks_per_node", [1, 2, 4, 8])
def test_the_tasks_of_a_node_share_its_gpus_without_overlap(tasks_per_node):
    shares = [local_device_ids(task(1, local, f"{tasks_per_node}(x2)",
                                    CUDA_VISIBLE_DEVICES=EIGHT))
              for local in range(tasks_per_node)]
    assert sorted(d for share in shares for d in share) == list(range(8))
    assert all(len(share) == 8 // tasks_per_node for share in shares)


def test_gpus_bound_per_task_are_all_the_tasks():
    # --gpus-per-task=2: SLURM shows each task only its own two GPUs.
    env = task(0, 3, "4", CUDA_VISIBLE_DEVICES="0,1", SLURM_GPUS_PER_TASK="2")
    assert local_device_ids(env) == [0, 1]


def test_gpu_count_from_slurm_when_cuda_visible_devices_is_unset():
    assert local_device_ids(task(0, 0, "1", SLURM_GPUS_ON_NODE="4")) == [0, 1, 2, 3]


@pytest.mark.parametrize("env", [
    {},  # not under SLURM
    task(0, 0, "1"),  # no GPUs (a CPU job)
    task(0, 0, "1", CUDA_VISIBLE_DEVICES=EIGHT, JAX_LOCAL_DEVICE_IDS="0"),  # the user's choice
    task(0, 5, "16", CUDA_VISIBLE_DEVICES=EIGHT),  # more tasks than GPUs: JAX's own rule
])
def test_left_to_jax(env):
    assert local_device_ids(env) is None
