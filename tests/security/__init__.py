"""Regression tests for issue 16: each one failed on the code before its fix."""
