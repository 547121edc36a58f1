"""A toy method that exercises the worker protocol without a model."""
