"""A fourth searcher written as docs/searchers.md says, to check that those steps are all it
takes: this folder (settings + search), one config file (tests/conf/searcher/tiny.yaml) and one
registry line (added by tests/test_searcher_contract.py for the length of a test).

``searcher=tiny`` draws ``samples`` architectures of the Auto-DeepLab space and hands back the
``top_k`` with the fewest parameters: cheapest-first, a searcher of no merit but every duty."""
