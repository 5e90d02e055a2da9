"""Detectron2's ``launch`` on GPUs, and the same training over CPU processes where there are none.

Detectron2 v0.6's ``launch`` asserts CUDA in every worker and joins them with NCCL, and its
``create_ddp_model`` hands DistributedDataParallel ``device_ids=[local_rank]``, which DDP
refuses for a model on the CPU. We wrap rather than patch the installed package: with GPUs (or
one process) :func:`launch` is Detectron2's own; without GPUs and ``num_gpus_per_machine > 1``
it spawns that many CPU processes joined by gloo, sets Detectron2's local process group as its
``launch`` would, and gives DDP ``device_ids=None`` in those processes. The rest (samplers that
shard by rank, gradient all-reduce, gathering evaluation results, checkpoints saved by rank 0)
is Detectron2's, unchanged.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

import torch

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str | None = None, args: tuple = (), timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """``detectron2.engine.launch``, or, on a machine without GPUs, ``num_gpus_per_machine`` CPU
    processes per machine with the gloo backend (``dist_url`` "auto": a free local port)."""
    from detectron2.engine import launch as d2_launch

    if torch.cuda.is_available() or num_gpus_per_machine * num_machines <= 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                         dist_url=dist_url, args=args, timeout=timeout)
    import torch.multiprocessing as mp

    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url=auto works on one machine only; give tcp://HOST:PORT")
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info("no GPU: %d CPU processes per machine with gloo at %s", num_gpus_per_machine, dist_url)
    mp.start_processes(_cpu_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
                       args=(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout))


def _cpu_ddp_model(model, *, fp16_compression: bool = False, **kwargs):
    """``detectron2.engine.defaults.create_ddp_model`` for a model on the CPU: DDP takes no
    device ids there (and fp16 gradient compression is a GPU bandwidth trick)."""
    from detectron2.utils import comm
    from torch.nn.parallel import DistributedDataParallel

    if comm.get_world_size() == 1:
        return model
    kwargs.pop("device_ids", None)
    return DistributedDataParallel(model, device_ids=None, **kwargs)


def _cpu_worker(local_rank: int, main_func: Callable, processes_per_machine: int, num_machines: int,
                machine_rank: int, dist_url: str, args: tuple, timeout: timedelta) -> None:
    import torch.distributed as dist
    from detectron2.engine import defaults
    from detectron2.utils import comm

    world_size = processes_per_machine * num_machines
    global_rank = machine_rank * processes_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    # Detectron2's launch makes one group per machine; comm.get_local_rank() reads it.
    for i in range(num_machines):
        ranks = list(range(i * processes_per_machine, (i + 1) * processes_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # The processes share the CPU cores instead of each taking them all.
    torch.set_num_threads(max(1, torch.get_num_threads() // processes_per_machine))
    defaults.create_ddp_model = _cpu_ddp_model
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


__all__ = ["launch"]
