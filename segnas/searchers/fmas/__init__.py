"""FMAS (Xiong et al., 2023): multi-objective search over the sub-networks of one trained
DeepLabV3+, scored with their inherited weights (no fine-tuning), NSGA-II, and only the Pareto
front handed back for fine-tuning.

:func:`.searcher.search` wires the parts: the supernet (:mod:`.supernet`, trained by an ordinary Trainer fit
when none is given), then :class:`.module.FMASSearchModule` under one ``Trainer.fit`` (one
generation per epoch; :mod:`segnas.searchers.engine`): the integer encoding of the sub-networks
(:mod:`.encoding`), pricing and scoring with a cache (:mod:`.evaluator`, :mod:`.scoring`), the
NSGA-II step (:mod:`.nsga`), and the front, hypervolume and plots (:mod:`.pareto`).

Under ``trainer=ddp`` / ``ddp_spawn`` the Trainer's ranks split each population's new
sub-networks between them and all-gather the records
(:meth:`.evaluator.Evaluator.evaluate_many`); rank 0 writes the files. Scoring runs on
``searcher.device`` (``auto``: the device the Trainer gives this rank).
"""
