"""HTTP glue shared by every stage: error pages/JSON, printable and loggable paths, the rate-limited malformed-request log.

It sits below identity, server and admin (it imports nothing of rolegate but ``rolegate.errors``), so any of them may use it
without an import cycle; tests/test_layers.py holds the allowed directions.
"""
