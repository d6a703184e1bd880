"""psi-share: find the actors that attack several AI labs, without revealing customer data.

The public API (what the CLI itself uses)::

    Node            a node: open a home, import data, match one peer, serve
    init_home       create a node home (config, keys, store)
    load_job        read a TOML job file
    run_job         run this node's side of a job (every other participant)
    Mode            "reveal" (which items match) or "count" (only how many)
    ImportMode      "replace" or "append" a dataset on import
"""

from .errors import PsiShareError
from .jobs.runner import run_job
from .jobs.spec import JobRunResult, JobSpec, load_job
from .node.home import NodeHome, init_home
from .node.node import Node, RunningServer
from .protocols.psi import Mode
from .prompts import register_prompt_kind
from .store import ImportMode

# The prompt kind (psi_share/prompts) joins the identifier registry here, at
# the package root, so that every process that uses psi_share knows it.
register_prompt_kind()

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
    "run_job",
]
