"""The node's prompt wing: prompt chains wired into import, sessions and results (issue 14).

The core (normalisation, signatures, band items, exclusions) is ground
floor in :mod:`psi_share.prompts`; this wing connects it to the store and
the protocols:

* :mod:`.config`    the ``[prompts]`` section
* :mod:`.importer`  a prompt file into a dataset: band items as identifier
                    rows of kind ``prompt``, after exclusions, deduplication and the cap
* :mod:`.matches`   what a reveal session learned, per template and per chain

Who learns what is the README's "Prompt chains" section.
"""
