"""The ``psi-share`` command line (click), a thin layer over :mod:`psi_share`."""
