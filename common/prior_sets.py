"""The shipped prior sets, by name (torch-free: ``dvi.config`` and ``--help`` read it).

Each MANIFEST.json entry belongs to one set (its ``prior_set``; an entry that names none is ``full``):

* ``full``: the 20-layer, 64-channel BF-DnCNNs, one per corpus group (the paper's prior size; the reference
  configuration's K = 3 components);
* ``light``: 10 layers x 32 channels, an eighth of the arithmetic per call (docs/performance.md), for the fast
  preset's single component. Where no light prior is shipped for a channel count, the full set serves.

Stage 2 takes a set with ``--prior-set`` (:class:`dvi.config.Method`); ``python -m prior_training export
--prior-set`` records it; :func:`common.prior_files.default_prior_paths` applies it.
"""

FULL_SET = "full"
PRIOR_SETS = (FULL_SET, "light")
