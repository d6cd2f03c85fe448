"""The development sandbox of f1-backfill: what runs the product without a cluster.

A distribution apart from the product (``operator/f1sandbox``), as kopf keeps its API
emulator in the separate ``kmock`` package: the product's wheel and image carry only
``f1backfill``, and nothing here is imported by it.
"""
