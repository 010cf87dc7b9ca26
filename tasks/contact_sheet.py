"""``DST/contact_sheet.html``: status counts, the least confident results first (for review
before publishing), before/after pairs of a sample of the collection, and the failed inputs
with their reasons, for a person to look at."""

from __future__ import annotations

import html
import io

import pandas as pd
from PIL import Image

from koala import storage
from koala.images import pil_guards
from tasks.colorize import THUMB, make_thumb, thumb_uris

#: results shown in the contact sheet's review section, least confident first
REVIEW_FIRST = 24

STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.pair{display:inline-block;margin:0 1em 1em 0}.pair img{max-height:240px;margin-right:4px}
.pair p{margin:2px 0;font-size:small;max-width:500px;word-break:break-all}"""


def _pair(output: str, r, label: str = "") -> str:
    before, after = thumb_uris(output, r.key)
    rel = [u[len(output.rstrip("/")) + 1 :] for u in (before, after)]
    return (
        f"<div class='pair'><img src='{rel[0]}' alt='input'><img src='{rel[1]}' "
        f"alt='colorized'><p>{label}{html.escape(r.input_uri)} ({r.width}x{r.height}, "
        f"{html.escape(str(r.input_mode))}, {r.bit_depth}-bit)</p></div>"
    )


def _ensure_thumbs(output: str, r) -> bool:
    """Thumbnails of a result outside the sampled ones, from its output (whose L* is the
    input's: the 'before' is its gray); False when the output cannot be read."""
    before, after = thumb_uris(output, r.key)
    if storage.exists(after):
        return True
    pil_guards()
    try:
        img = Image.open(io.BytesIO(storage.read_bytes(r.output_uri)))
        img.draft("RGB", (2 * THUMB, 2 * THUMB))  # JPEG: decode reduced
        img.load()
    except Exception:
        return False
    storage.atomic_write_bytes(after, make_thumb(img.convert("RGB")))
    storage.atomic_write_bytes(before, make_thumb(img.convert("L")))
    return True


def review_section(output: str, index: pd.DataFrame, most: int = REVIEW_FIRST) -> str:
    """Pairs of the ``most`` least confident results (the model's own confidence in its
    colours), least confident first; empty when the model reports no confidence."""
    if "confidence" not in index:
        return ""
    rated = index[(index["status"] == "ok") & index["confidence"].notna()]
    if rated.empty:
        return ""
    pairs = "".join(
        _pair(output, r, f"confidence {r.confidence:.2f} · ")
        for r in rated.sort_values("confidence").head(most).itertuples()
        if _ensure_thumbs(output, r)
    )
    return (
        "<h2>Review first: the least confident results</h2><p>Sorted by the model's confidence "
        "in its colours (index column <code>confidence</code>, 0 to 1), lowest first.</p>" + pairs
    )


def write_contact_sheet(output: str, index: pd.DataFrame, model: str, failed_rows: int = 50) -> str:
    """Write the contact sheet of ``index`` (this run's rows) under ``output``; return its URI."""
    counts = index["status"].value_counts()
    rows = "".join(
        f"<tr><th>{html.escape(str(s))}</th><td>{int(n)}</td></tr>" for s, n in counts.items()
    )
    pairs = "".join(
        _pair(output, r)
        for r in index[index["status"] == "ok"].sort_values("ordinal").itertuples()
        if storage.exists(thumb_uris(output, r.key)[1])
    )
    failed = index[index["status"] == "failed"].sort_values("ordinal").head(failed_rows)
    fails = "".join(
        f"<tr><td>{html.escape(r.input_uri)}</td><td>{html.escape(str(r.reason))}</td></tr>"
        for r in failed.itertuples()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Koala contact sheet</title><style>{STYLE}</style></head><body>
<h1>Koala contact sheet</h1>
<p>{len(index)} inputs colorized with <b>{html.escape(model)}</b>. Outputs are machine-colorized
and labelled as such in their metadata. Index: <code>index/</code> (Parquet).</p>
<table>{rows}</table>
{review_section(output, index)}
<h2>Before and after (first inputs of the collection)</h2>{pairs or "<p>none</p>"}
<h2>Failed inputs</h2><table><tr><th>input</th><th>reason</th></tr>{fails}</table>
</body></html>"""
    uri = storage.join(output, "contact_sheet.html")
    storage.atomic_write_bytes(uri, page.encode())
    return uri
