"""Search-strategy benchmark tables (NAS-Bench's idea on segnas's spaces): a space evaluated once
(``task=tabulate``), then the searchers' own loops replayed against it for many seeds
(``task=replay``), so search strategies and their hyperparameters can be compared with the
repeats a real search cannot afford.

- :mod:`.store`: the table on disk (``table.json``, ``table.csv``), appended and resumable;
- :mod:`.fmas`: every sub-network of a reduced FMAS space scored by the search's evaluator, and the
  table scorer NSGA-II's replay asks instead;
- :mod:`.auxcell`: children of a uniform auxcell search, a surrogate of their reward with its
  held-out Kendall tau, and the controller's replay against it;
- :mod:`.autodeeplab`: architectures of the Auto-DeepLab discrete space trained at one low
  fidelity and a surrogate of their held-out score (no replay: that search is a gradient descent);
- :mod:`.surrogate`: the random forest on one-hot decisions and its out-of-fold Kendall tau;
- :mod:`.curves`: anytime curves over seeds, their bands and the differences at the budget.
"""
