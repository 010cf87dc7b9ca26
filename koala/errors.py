"""User-facing errors: one line that names the input and the reason."""

from __future__ import annotations


class KoalaError(RuntimeError):
    """An error caused by the user's input or setup; the CLI prints it as one line and exits 2."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Rejected(Exception):
    """An input that is not a usable image; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
