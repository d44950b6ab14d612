"""The shipped prior sets, by name (torch-free: ``dvi.config`` and ``--help`` read it).

Each MANIFEST.json entry belongs to one set (its ``prior_set``; an entry that names none is ``full``):

* ``full``: one BF-DnCNN per corpus group A, B, C (the reference configuration's K = 3 components); since
  2026-12-07 10 layers x 32 channels trained from scratch with the light-noise recipe, which measured better
  than the 20 x 64 priors the short trainings here could give (docs/priors.md);
* ``light``: the fast preset's single component, the group-B prior (the same weights as the full set's B).
  Where no light prior is shipped for a channel count, the full set serves.

Stage 2 takes a set with ``--prior-set`` (:class:`dvi.config.Method`); ``python -m prior_training export
--prior-set`` records it; :func:`common.prior_files.default_prior_paths` applies it.
"""

FULL_SET = "full"
PRIOR_SETS = (FULL_SET, "light")
