"""``DST/contact_sheet.html``: status counts, the least confident results first (for review
before publishing), labelled before/after pairs of a sample of the collection (sortable by the
model's confidence, linked to the full-resolution outputs), and every skipped and failed input
with its reason, :data:`PAGE_ROWS` to a page (``contact_sheet-<status>-<n>.html`` after the
first), for a person to look at. Paths are shown relative to the collection."""

from __future__ import annotations

import html
import io
import math
import os
import posixpath
import re
from collections.abc import Iterable
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from koala import storage
from koala.choices import DEFAULT_LIMITS
from koala.images import pil_guards
from koala.monochrome import thumbnail_lab
from koala.uris import split_member_uri
from tasks.thumbnails import THUMB, existing_thumbs, make_thumb, thumb_names, thumb_uris

#: results shown in the contact sheet's review section, least confident first
REVIEW_FIRST = 24
#: skipped or failed inputs listed per page
PAGE_ROWS = 200
SHEET = "contact_sheet.html"
#: input modes of files without colour channels (an input's ``input_mode`` before any ``;16``)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
#: median chroma (CIE Lab units) of a thumbnail above which a monochrome input is "toned"
TONED_CHROMA = 4.0
#: what each status means, for the counts table
STATUS_MEANING = {
    "ok": "colorized",
    "skipped_color": "left alone: the input already has colour",
    "failed": "not colorized: see the reason below",
}

STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:1em 1.5em;align-items:flex-start}
.pair{margin:0;border:1px solid #ddd;padding:6px;background:#fafafa}.pair>div{display:flex;gap:4px}
figure.half{margin:0;text-align:center}.half img{max-height:240px;max-width:320px;display:block}
.half figcaption{font-size:small;color:#555}td.thumb{font-size:small;color:#555}
td.thumb img{max-height:120px;max-width:160px}dl.run{display:grid;grid-template-columns:auto 1fr;
gap:2px 1em;margin:.5em 0}dl.run dt{font-weight:bold}dl.run dd{margin:0}
.pair>figcaption{margin-top:4px;font-size:small;max-width:644px;word-break:break-all}
nav.pages{margin:.5em 0}nav.pages a,nav.pages b{margin-right:.5em}.sort button{margin-right:.5em}"""

#: reorders the grid's figures by a data attribute; rows without the value go last
SORT_JS = """<script>
function sortGrid(key, dir) {
  const grid = document.getElementById('grid');
  const items = Array.from(grid.children);
  items.sort((a, b) => {
    const x = a.dataset[key], y = b.dataset[key];
    if (x === '' || y === '') return (x === '') - (y === '');
    return dir * (parseFloat(x) - parseFloat(y));
  });
  items.forEach((e) => grid.appendChild(e));
}
document.getElementById('sort').hidden = false;
if (location.hash === '#least-confident') sortGrid('confidence', 1);
</script>"""


def collection_root(uris: Iterable[str], root: str | None = None) -> str:
    """The folder the captions are relative to, with its trailing ``/``: ``root`` when every
    input lies under it, else the longest common folder of the inputs (an archive member's
    folder being its archive)."""
    shown = [_location(u) for u in uris]
    if root:
        base = _location(root).rstrip("/") + "/"
        if shown and all(s.startswith(base) and len(s) > len(base) for s in shown):
            return base
    if not shown:
        return ""
    common = []
    for names in zip(*(s.split("/")[:-1] for s in shown), strict=False):
        if len(set(names)) > 1:
            break
        common.append(names[0])
    return "/".join(common) + "/" if common else ""


def _location(uri: str) -> str:
    """``uri`` as a path: an archive member as ``ARCHIVE/MEMBER``."""
    member = split_member_uri(uri)
    return f"{member[2]}/{member[1]}" if member else uri


def relative_name(uri: str, root: str) -> str:
    """``uri`` relative to the collection ``root`` (from :func:`collection_root`)."""
    shown = _location(uri)
    return shown[len(root) :] if root and shown.startswith(root) else shown


def output_href(output: str, uri: str) -> str:
    """A link from the sheet in ``output`` to ``uri``: relative (URL-quoted) when ``uri`` is under
    ``output`` or both are local, else ``uri`` itself."""
    base = output.rstrip("/") + "/"
    if uri.startswith(base):
        return quote(uri[len(base) :])
    if storage.is_local(output) and storage.is_local(uri):
        rel = os.path.relpath(storage.local_path(uri), storage.local_path(output))
        return quote(rel.replace(os.sep, "/"))
    return uri


def _attr(text: object) -> str:
    return html.escape(str(text), quote=True)


def _confidence(r) -> float | None:
    value = getattr(r, "confidence", None)
    return None if value is None or pd.isna(value) else float(value)


def _number(value: object) -> str:
    """An integer column's value as written (NA: ?), whatever the frame's dtype."""
    return "?" if pd.isna(value) else str(int(value))


def _saturation(r) -> float:
    value = getattr(r, "saturation", None)
    return 1.0 if value is None or pd.isna(value) else float(value)


def _thumbs(output: str, r) -> tuple[str, str]:
    """(before, after) thumbnail URIs of row ``r`` (its saturation's after)."""
    return thumb_uris(output, r.key, _saturation(r))


def input_kind(r, before: str | None = None) -> str:
    """What the input was, in a few words: a gray file, a gray or toned print stored in colour
    (from the median chroma of its thumbnail ``before``), or a colour photograph."""
    if r.status == "skipped_color":
        return "colour photograph"
    if str(r.input_mode).split(";")[0] in GRAY_MODES:
        return "grayscale input"
    try:
        with Image.open(io.BytesIO(storage.read_bytes(before or ""))) as img:
            lab = thumbnail_lab(img.convert("RGB"))  # CIE Lab, L* 0-100
    except Exception:
        return "input"
    chroma = float(np.median(np.hypot(lab[..., 1], lab[..., 2])))
    return "toned input" if chroma >= TONED_CHROMA else "gray input (stored as colour)"


def _pair(output: str, r, root: str, label: str = "") -> str:
    """A labelled before/after figure of one result; the colorized side links to its output."""
    uris = _thumbs(output, r)
    kind = input_kind(r, uris[0])
    before, after = (u[len(output.rstrip("/")) + 1 :] for u in uris)
    name = relative_name(r.input_uri, root)
    conf = _confidence(r)
    href = _attr(output_href(output, r.output_uri)) if isinstance(r.output_uri, str) else ""
    full = f" · <a href='{href}'>full resolution</a>" if href else ""
    img = f"<img src='{after}' alt='colorized: {_attr(name)}'>"
    linked = f"<a href='{href}'>{img}</a>" if href else img
    return (
        f"<figure class='pair' data-order='{int(r.ordinal)}' "
        f"data-confidence='{'' if conf is None else f'{conf:.6f}'}'><div>"
        f"<figure class='half'><img src='{before}' alt='{kind}: {_attr(name)}'>"
        f"<figcaption>{kind}</figcaption></figure>"
        f"<figure class='half'>{linked}"
        f"<figcaption>colorized{_saturation_words(r)}{full}</figcaption></figure></div>"
        f"<figcaption title='{_attr(r.input_uri)}'>{html.escape(label)}<b>{html.escape(name)}"
        f"</b><br>{_number(r.width)}×{_number(r.height)}, {html.escape(str(r.input_mode))}, "
        f"{_number(r.bit_depth)}-bit"
        f"{'' if conf is None or label else f', confidence {conf:.2f}'}</figcaption></figure>"
    )


def _saturation_words(r) -> str:
    value = _saturation(r)
    return "" if value == 1.0 else f" at saturation {value:g}"


def _ensure_thumbs(output: str, r) -> bool:
    """Thumbnails of a result outside the sampled ones, from its output (whose L* is the
    input's: the 'before' is its gray); False when the output cannot be read."""
    before, after = _thumbs(output, r)
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


def _shown(n: int, total: int) -> str:
    return f"all {total}" if n == total else f"{n} of {total}"


def review_section(
    output: str, index: pd.DataFrame, most: int = REVIEW_FIRST, root: str | None = None
) -> str:
    """Pairs of the ``most`` least confident results (the model's own confidence in its
    colours), least confident first; empty when the model reports no confidence."""
    if "confidence" not in index:
        return ""
    rated = index[(index["status"] == "ok") & index["confidence"].notna()]
    if rated.empty:
        return ""
    root = collection_root(index["input_uri"]) if root is None else root
    pairs = "".join(
        _pair(output, r, root, f"confidence {r.confidence:.2f} · ")
        for r in rated.sort_values("confidence").head(most).itertuples()
        if _ensure_thumbs(output, r)
    )
    return (
        "<h2 id='review'>Review first: the least confident results</h2><p>Sorted by the "
        "model's confidence in its colours (index column <code>confidence</code>, 0 to 1), "
        f"lowest first: {_shown(min(most, len(rated)), len(rated))}.</p>"
        f"<div class='grid'>{pairs}</div>"
    )


def _uncertain_figure(output: str, r, root: str) -> str:
    """One input the colour judge was unsure of: its thumbnail(s) and what was done."""
    verdict = "judged monochrome: colorized" if r.status == "ok" else "judged colour: left alone"
    label = f"{verdict} · colour score {r.colour_score:.2f} · "
    if r.status == "ok" and _ensure_thumbs(output, r):
        return _pair(output, r, root, label)
    before = thumb_uris(output, r.key)[0]
    if not storage.exists(before):
        return ""
    name = relative_name(r.input_uri, root)
    return (
        f"<figure class='pair'><div><figure class='half'><img src='"
        f"{before[len(output.rstrip('/')) + 1 :]}' alt='input: {_attr(name)}'><figcaption>"
        f"input</figcaption></figure></div><figcaption title='{_attr(r.input_uri)}'>"
        f"{html.escape(label)}<b>{html.escape(name)}</b></figcaption></figure>"
    )


def uncertain_section(
    output: str, index: pd.DataFrame, root: str, most: int = 2 * REVIEW_FIRST
) -> str:
    """ "Check these: colour or monochrome?": the inputs whose colour decision the judge was
    unsure of (index column ``colour_uncertain``), nearest the cut first, with thumbnails."""
    if "colour_uncertain" not in index:
        return ""
    flagged = index[index["colour_uncertain"].fillna(False).astype(bool)]
    if flagged.empty:
        return ""
    cut = 1.0 - DEFAULT_LIMITS.monochrome_probability
    order = (flagged["colour_score"] - cut).abs().sort_values().index
    figures = "".join(
        _uncertain_figure(output, r, root) for r in flagged.loc[order].head(most).itertuples()
    )
    return (
        "<h2 id='check-colour'>Check these: colour or monochrome?</h2><p>The colour judge was "
        f"unsure of {len(flagged)} input{'s' * (len(flagged) != 1)} (index column "
        "<code>colour_uncertain</code>); each was decided by its best guess, shown here "
        f"nearest the cut first ({_shown(min(most, len(flagged)), len(flagged))}). "
        "A colour photograph judged monochrome has its colours replaced: rerun it with "
        "<code>--treat-as colour</code>; a print left alone is colorized with "
        "<code>--treat-as monochrome</code>.</p>"
        f"<div class='grid'>{figures}</div>"
    )


def _sample_section(output: str, index: pd.DataFrame, root: str) -> tuple[str, bool]:
    """The before/after grid of the sampled results, with buttons sorting it by confidence,
    and whether it shows every result."""
    ok = index[index["status"] == "ok"].sort_values("ordinal")
    after = thumb_names(ok["key"], ok.get("saturation"))[1]
    shown = ok[after.isin(existing_thumbs(output)).to_numpy()]
    pairs = [_pair(output, r, root) for r in shown.itertuples()]
    rated = "confidence" in index and ok["confidence"].notna().any()
    head = (
        f"<h2 id='samples'>Before and after (first inputs of the collection)</h2><p>"
        f"{_shown(len(pairs), len(ok)).capitalize()} colorized inputs. Left: the input; right: "
        "the colorized output (click it for the full-resolution file).</p>"
    )
    if not pairs:
        return head + "<p>none</p>", ok.empty
    grid = f"<div class='grid' id='grid'>{''.join(pairs)}</div>"
    every = len(pairs) == len(ok)
    if not rated:
        return head + grid, every
    buttons = (
        "<p class='sort' id='sort' hidden>Order: <button onclick=\"sortGrid('order', 1)\">"
        "collection order</button><button onclick=\"sortGrid('confidence', 1)\">least confident"
        " first</button><button onclick=\"sortGrid('confidence', -1)\">most confident first"
        "</button></p>"
    )
    return head + buttons + grid + SORT_JS, every  # the script runs after the grid is there


def _document(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><meta name='viewport' content='width=device-width'><style>{STYLE}</style>"
        f"</head><body>{body}</body></html>"
    )


def _slug(status: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", status).strip("-") or "status"


def page_name(status: str, n: int) -> str:
    """The file (beside the sheet) of page ``n`` of a status's list; page 1 is in the sheet."""
    return f"{SHEET}#{_slug(status)}" if n == 1 else f"contact_sheet-{_slug(status)}-{n}.html"


def _nav(status: str, n: int, pages: int) -> str:
    """Links to the pages of a list: the first, the last and those near ``n``."""
    shown = sorted({1, pages, *range(max(1, n - 3), min(pages, n + 3) + 1)})
    out, last = [], 0
    for i in shown:
        if i > last + 1:
            out.append("…")
        out.append(f"<b>{i}</b>" if i == n else f"<a href='{page_name(status, i)}'>{i}</a>")
        last = i
    return f"<nav class='pages'>Pages: {' '.join(out)}</nav>" if pages > 1 else ""


def _input_cell(output: str, r) -> str:
    """The thumbnail of an input that was not colorized, when there is one, and what it is."""
    before = thumb_uris(output, r.key)[0]
    if not storage.exists(before):
        return "<td class='thumb'>no picture</td>"
    href = output_href(output, before)
    kind = input_kind(r, before)
    return (
        f"<td class='thumb'><a href='{_attr(href)}'><img src='{_attr(href)}' "
        f"alt='{kind}'></a><br>{kind}</td>"
    )


def _issue_table(output: str, rows: pd.DataFrame, start: int, root: str) -> str:
    body = "".join(
        f"<tr><td class='n'>{start + i + 1}</td>{_input_cell(output, r)}"
        f"<td title='{_attr(r.input_uri)}'><code>"
        f"{html.escape(relative_name(r.input_uri, root))}</code></td><td>"
        f"{'—' if pd.isna(r.reason) else html.escape(str(r.reason))}{_score(r)}</td></tr>"
        for i, r in enumerate(rows.itertuples())
    )
    head = "<tr><th>#</th><th>picture</th><th>input</th><th>reason</th></tr>"
    return f"<table>{head}{body}</table>"


def _score(r) -> str:
    value = getattr(r, "colour_score", None)
    return "" if value is None or pd.isna(value) else f" (colour score {float(value):.2f})"


def issue_section(
    output: str, status: str, rows: pd.DataFrame, root: str, per_page: int = PAGE_ROWS
) -> tuple[str, list[str]]:
    """The sheet's list of the ``status`` inputs (its first page) with their reasons; the
    further pages are written beside the sheet, and their URIs returned."""
    pages = max(1, math.ceil(len(rows) / per_page))
    title = f"{html.escape(status)}: {len(rows)} input{'s' * (len(rows) != 1)}"
    written = []
    for n in range(1, pages + 1):
        part = rows.iloc[(n - 1) * per_page : n * per_page]
        head = f"<p>Rows {(n - 1) * per_page + 1}–{(n - 1) * per_page + len(part)} of {len(rows)}"
        table = _issue_table(output, part, (n - 1) * per_page, root)
        body = f"{head}.</p>{_nav(status, n, pages)}{table}"
        if n == 1:
            first = f"<h2 id='{_slug(status)}'>{title}</h2>{body}"
            continue
        back = f"<p><a href='{SHEET}'>← contact sheet</a></p>"
        uri = storage.join(output, page_name(status, n))
        page = _document(f"Koala: {status}, page {n}", f"{back}<h1>{title}, page {n}</h1>{body}")
        storage.atomic_write_bytes(uri, page.encode())
        written.append(uri)
    return first, written


def _remove_stale_pages(output: str, keep: list[str]) -> None:
    """Delete list pages of an earlier sheet that this one does not link to."""
    names = {posixpath.basename(u) for u in keep}
    for uri in storage.list_files(output, "contact_sheet-*.html"):
        name = posixpath.basename(uri)
        if re.fullmatch(r"contact_sheet-[A-Za-z0-9_-]+-\d+\.html", name) and name not in names:
            storage.remove(uri)


def _below(status: str) -> str:
    return f" (<a href='#{_slug(status)}'>listed below</a>)"


def _counts_table(index: pd.DataFrame) -> str:
    counts = index["status"].value_counts()
    counts = counts[sorted(counts.index, key=lambda s: (s != "ok", *_issue_order(str(s))))]
    rows = "".join(
        f"<tr><th>{html.escape(str(s))}</th><td class='n'>{int(n)}</td><td>"
        f"{html.escape(STATUS_MEANING.get(str(s), ''))}"
        f"{'' if s == 'ok' else _below(str(s))}</td></tr>"
        for s, n in counts.items()
    )
    return (
        "<table><tr><th>status</th><th>inputs</th><th>meaning</th></tr>"
        f"{rows}<tr><th>total</th><td class='n'>{len(index)}</td><td></td></tr></table>"
    )


def _issue_order(status: str) -> tuple[int, str]:
    return (0 if status == "failed" else 1 if status.startswith("skipped") else 2), status


def _settings_list(model: str, index: pd.DataFrame, settings: dict | None) -> str:
    """The run's model and the options that shaped its results, as a definition list."""
    shown = {"model": model}
    if settings:
        shown |= {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in settings.items()}
    elif "saturation" in index and len(index):
        values = sorted(set(index["saturation"].fillna(1.0).astype(float)))
        shown["saturation"] = ", ".join(f"{v:g}" for v in values)
    items = "".join(
        f"<dt>{html.escape(k)}</dt><dd><code>{html.escape(v)}</code></dd>" for k, v in shown.items()
    )
    return f"<dl class='run' id='settings'>{items}</dl>"


def write_contact_sheet(
    output: str,
    index: pd.DataFrame,
    model: str,
    page_rows: int = PAGE_ROWS,
    collection: str | None = None,
    settings: dict | None = None,
) -> str:
    """Write the contact sheet of ``index`` (this run's rows) under ``output``; return its URI.
    ``collection``: the input root the paths are shown relative to (default: the inputs'
    common folder); ``settings``: the run's options shown at the top (default: the
    saturation the rows record). Every skipped and failed input is listed, ``page_rows`` to a
    page; each result is shown once (the review section only when the sample does not hold
    every result)."""
    root = collection_root(index["input_uri"], collection)
    issues, pages = [], []
    for status in sorted(set(index["status"]) - {"ok"}, key=_issue_order):
        rows = index[index["status"] == status].sort_values("ordinal")
        section, written = issue_section(output, status, rows, root, page_rows)
        issues.append(section)
        pages += written
    where = (
        f"Paths are relative to the collection <code>{html.escape(root)}</code>; hover over one "
        "for its full URI."
        if root
        else ""
    )
    samples, every = _sample_section(output, index, root)  # before the review adds thumbnails
    review = "" if every else review_section(output, index, root=root)
    body = f"""<h1>Koala contact sheet</h1>
{_settings_list(model, index, settings)}
<p>{len(index)} inputs. Outputs are machine-colorized and labelled as such in their metadata
(with the model and saturation that made them). Index: <code>index/</code> (Parquet; column
<code>colour_score</code> sorts the inputs by how much colour they carry: 0 for a gray file).
{where}</p>
<p>Know a colour (a uniform, a tram, a flag)? Pin it:
<code>koala review {html.escape(output)}</code> opens a local page where you click the
point, pick its colour and save; the next <code>koala colorize</code> run of this output
honours it.</p>
{_counts_table(index)}
{uncertain_section(output, index, root)}
{review}
{samples}
{"".join(issues)}"""
    uri = storage.join(output, SHEET)
    storage.atomic_write_bytes(uri, _document("Koala contact sheet", body).encode())
    _remove_stale_pages(output, pages)
    return uri


def sheet_settings(cfg) -> dict:
    """The options of a colorize run (``ColorizeConfig``) that the sheet shows at its top."""
    return {"saturation": float(cfg.saturation), "treat as": cfg.treat_as, "format": cfg.format}
