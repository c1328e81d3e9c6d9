"""The tasks behind ``python -m segnas.run task=<name>``, one module each, each with ``run(cfg)``
as its one entry: :mod:`.train` trains a fixed architecture, :mod:`.eval` scores a checkpoint on
a split, :mod:`.profile` prices an architecture, :mod:`.search` runs the chosen searcher and
retrains what it returns, :mod:`.compare` runs several searches and their random baselines, :mod:`.tabulate` writes a
search-strategy benchmark table of a space and :mod:`.replay` runs the searchers against one.

:func:`segnas.pipeline.run` checks the config, makes the run directory, seeds, dispatches here
and closes the logger. Every task writes ``config.yaml`` and ``summary.json`` to the run
directory and returns the summary. The parts several tasks share live in :mod:`.fitting`
(training a network and scoring it) and :mod:`.summary` (what a summary holds).
"""

from segnas.settings.run import Task

TASKS = tuple(str(task) for task in Task)
