"""Typed settings: one dataclass per config group, the schema Hydra composes the config with
(:mod:`.schema`), and the objects the code below the pipeline takes instead of the config.

- :mod:`.base`: the building blocks (choices, range rules, the builder that names keys);
- :mod:`.run`: ``conf/config.yaml``'s own keys (task, train, retrain, eval, budget...);
- :mod:`.data`, :mod:`.hardware`: the data and hardware groups;
- each searcher's schema lives in its own folder (``segnas/searchers/<name>/settings.py``),
  listed by :mod:`segnas.searchers.registry`.
"""
