"""Prefect flows: thin orchestration over the functions in ``tasks/``."""
