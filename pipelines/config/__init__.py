"""The config: its typed schema (the one home of every default), Hydra composition and
validation, and the operator's limits. It imports nothing of tracking, the cache or the
stages: every layer above reads the config (tests/test_layers.py)."""
