"""Baselines without a neural network: what a data scientist would try before pretraining.

``classical`` holds the ``tfidf`` init (one classical rule or model per task kind) and the
majority-class rule every report draws as its floor.
"""
