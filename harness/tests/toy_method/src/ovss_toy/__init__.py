"""A toy method that exercises the worker protocol and the training contract without a model."""
