"""FEFF10 K-edge XANES simulation of Materials Project structures, fanned out with Dask (issue 6).

Modules: ``settings`` (params.yaml ``simulate:`` block), ``inputs`` (unique sites, feff.inp via
MPXANESSet), ``runner`` (one FEFF run in a child process, xmu.dat parsing, one retry), ``cache``
(per-site cache keyed by structure, site, settings, FEFF version; atomic writes), ``shards``
(append-only parquet shards + manifest, :func:`read_shards`), ``cluster`` (LocalCluster or an existing
scheduler), ``planner`` (what to compute next), ``pipeline`` (the batch loop).
"""

from .shards import read_shards

__all__ = ["read_shards"]
