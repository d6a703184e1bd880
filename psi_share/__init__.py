"""psi-share: find the actors that attack several AI labs, without revealing customer data.

The public API (what the CLI itself uses)::

    Node            a node: open a home, import data, match, run jobs, serve
    init_home       create a node home (config, keys, store)
    load_job        read a TOML job file
    Mode            "reveal" (which items match) or "count" (only how many)
    ImportMode      "replace" or "append" a dataset on import
"""

from .errors import PsiShareError
from .node.home import NodeHome, init_home
from .jobs.spec import JobRunResult, JobSpec, load_job
from .node.node import Node, RunningServer
from .protocols.psi import Mode
from .store import ImportMode

__version__ = "0.1.0"

__all__ = [
    "ImportMode",
    "JobRunResult",
    "JobSpec",
    "Mode",
    "Node",
    "NodeHome",
    "PsiShareError",
    "RunningServer",
    "__version__",
    "init_home",
    "load_job",
]
