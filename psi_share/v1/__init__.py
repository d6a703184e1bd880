"""Generated wire contract (package ``psi_share.v1``).

Everything else in this folder is written by ``scripts/gen_protos.py`` from
``protos/psi_share/v1/*.proto``; never edit it by hand.
"""
