"""The ``koala`` command and ``make demo``: the top floor, which may import every layer below."""
