"""OVSS harness: one front end for SAN, OVSeg and CaR, each running in its own environment.

The harness never imports a method package. It starts ``<package venv>/bin/python -m
<package>.worker`` and talks the JSON-lines protocol of ``ovss_common.protocol`` to it.
It owns datasets, the evaluator, caching and reports.
"""

__version__ = "0.1.0"
