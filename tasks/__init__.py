"""The work of every stage as plain functions; flows wrap them as Prefect tasks."""
