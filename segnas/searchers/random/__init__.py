"""``searcher=random``: random search over any of the three spaces, the baseline a NAS result
must beat at equal budget.

``searcher.space`` picks the space and, with it, the procedure of the matching searcher, whose
settings are composed under ``searcher.<space>`` (``conf/searcher/random.yaml``) so that the
baseline spends what that searcher spends:

- ``autodeeplab``: architectures drawn uniformly (cell and path), each trained from scratch for
  an equal share of the Auto-DeepLab search's steps on trainA and scored on held-out trainB
  images (:mod:`.autodeeplab`);
- ``auxcell``: the auxcell search's own child loop with a uniform controller
  (``controller.algorithm=uniform``);
- ``fmas``: the FMAS search with uniform proposals instead of NSGA-II
  (``proposals=Proposals.random``), as many per generation, scored the same way.

The last two run the matching searcher's entry from the registry
(:mod:`segnas.searchers.registry`; no searcher imports another) with that one change; the
baseline therefore inherits their resume, logging and budget.
"""
