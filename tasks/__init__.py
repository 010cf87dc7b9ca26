"""The stages as plain functions (layer 2); flows wrap them as Prefect tasks. Shared libraries
(colour, images, sources, fetch, outputs, metrics) live on the ground floor, ``koala/``."""
