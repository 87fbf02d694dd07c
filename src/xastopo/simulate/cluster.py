"""Dask execution: an embedded LocalCluster sized to the machine, or an existing scheduler by address.

The same submit/as_completed code path runs on both; FEFF itself runs in a child process of each worker
(see :mod:`.runner`), so one worker = one FEFF run at a time = one core.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 0) -> Iterator[object]:
    """Yield a ``dask.distributed.Client``.

    ``scheduler``: address (``tcp://host:port``) or path to a scheduler file of a running cluster
    (e.g. one started by dask-jobqueue or ``dask scheduler``); None starts a LocalCluster with
    ``workers`` single-threaded worker processes (0 = one per core).
    """
    from dask.distributed import Client, LocalCluster

    if scheduler:
        if os.path.isfile(scheduler):
            client = Client(scheduler_file=scheduler, timeout="30s")
        else:
            client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    n = workers if workers and workers > 0 else machine_cores()
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit=0,  # FEFF runs in child processes; do not let the nanny restart workers
        silence_logs=40,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
