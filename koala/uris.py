"""Where an input lives: URI schemes, archive member URIs and archive filesystems.

Both :mod:`koala.sources` (listing inputs) and :mod:`koala.fetch` (reading them) stand on this
module, so neither needs the other's names.
"""

from __future__ import annotations

import fsspec

from koala import storage
from koala.errors import KoalaError, one_line

FETCHABLE_SCHEMES = ("http", "https")
ARCHIVE_SCHEMES = ("tar", "zip")


class SourceError(KoalaError):
    """A ``--source`` that cannot be read: missing, empty or of an unsupported kind."""


def scheme(uri: str) -> str:
    """The URL scheme of ``uri`` (``file`` for plain paths)."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else "file"


def split_member_uri(uri: str) -> tuple[str, str, str] | None:
    """``(protocol, member, archive)`` of an archive member URI ``tar://MEMBER::ARCHIVE`` (split
    at the last ``::``, so a member name may hold ``::``); None for any other URI."""
    s = scheme(uri)
    if s not in ARCHIVE_SCHEMES or "::" not in uri:
        return None
    member, _, archive = uri[len(s) + 3 :].rpartition("::")
    return s, member, archive


def archive_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """An fsspec filesystem over an archive and the protocol prefix of its members."""
    lower = url.lower()
    protocol = "zip" if lower.endswith(".zip") else "tar"
    compression = "gzip" if lower.endswith((".tar.gz", ".tgz")) else None
    storage.configure_fsspec()
    kwargs = {"compression": compression} if protocol == "tar" else {}
    try:
        fs = fsspec.filesystem(protocol, fo=url, **kwargs)
    except Exception as exc:
        raise SourceError(f"source {url!r}: cannot open archive ({one_line(exc)})") from None
    return fs, protocol
