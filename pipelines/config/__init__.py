"""The config: its typed schema, Hydra composition and validation, and the rules for input
that comes from a UI (overrides, paths, operator limits) or must be checked before a run."""
