"""The development sandbox of f1-backfill: what runs and tests the product without a cluster.

A distribution apart from the product (``operator/f1sandbox``), as kopf keeps its API
emulator in the separate ``kmock`` package: the product's wheel and image carry only
``f1backfill``, and nothing here is imported by it. The API emulator (``kubeapi``), the job
runner, the demo, the throwaway database, the fleet generator, the fake OpenAI server and
the CRD validator the tests share with the emulator (``crd``); see README.md.
"""
