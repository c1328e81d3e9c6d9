"""``searcher=auxcell``: Fast Dense NAS (Nekrasov et al., CVPR 2019) over the ``auxcell`` space.

Each round the controller samples ``searcher.children_per_round`` decoders from one state; each
child trains in two stages (decoder on cached frozen-encoder features with auxiliary heads and
optional distillation, then end to end for the children progressive early stopping lets
through), their held-out rewards update the controller in child order, and their rows join
``search.csv``. The best ``top_k`` children come back with the final width and separable
repeats for the pipeline to retrain from scratch. Children train on ``searcher.device``
(``auto``: the device the Trainer gives this rank).

The search is :class:`.module.AuxCellSearchModule` under one ``Trainer.fit`` (one round per
epoch; :mod:`segnas.searchers.engine`). Under ``trainer=ddp`` / ``ddp_spawn`` a round has one
child per rank by default, each rank trains its own (:func:`.trial.run_round`), results are
gathered, and every rank makes the same controller update, so all hold the same state; rank 0
writes the files. A run with ``children_per_round=W`` in one process samples, trains and learns
exactly what ``W`` ranks do, only one child after another.

``task_type=depth`` runs the same search with one output channel: berHu losses (auxiliary heads
included), distillation as MSE to a depth teacher's map, and a reward from δ1 and RMSE
(``searcher.reward.depth_metrics``).
"""
