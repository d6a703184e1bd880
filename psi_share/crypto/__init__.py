"""Cryptographic helpers: OpenMined PSI driven in parallel, key generation."""
