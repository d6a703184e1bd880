"""Engines that run OpenMined steps off the node: a Dask distributed cluster
(``[engine] kind = "dask"``). The optional extra ``psi-share[dask]``."""

from .dask_runner import DaskRunner, EngineUnavailable

__all__ = ["DaskRunner", "EngineUnavailable"]
