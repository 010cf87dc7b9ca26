"""The index of a colorize output, ``DST/index/part-*.parquet``, and what a run plans from it.

One row per input and result (:data:`INDEX_COLUMNS`; a result is a model version and the
settings that change the pixels: ``saturation``), written a batch at a time as
immutable part files. A rerun reads the index to decide, before any work:

* which inputs are done (``ok``, ``skipped_color``, a permanent failure) and which are redone:
  a transient failure (:data:`TRANSIENT_REASONS`, or any failure with ``retry_failed``), an input
  whose listing stamp or content changed since its row;
* which output name each input gets: a name already owned by another input (or another model
  version or saturation) in this DST is never reused, so no run overwrites an earlier run's output.

A redone input's new row *supersedes* the old one: :func:`compact_index` rewrites the parts that
hold superseded rows without them, and :func:`read_index` keeps only the newest row of each input
and model version even before that, so the index never lists an input twice.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from koala import storage
from koala.fetch import TRANSIENT_REASONS as FETCH_TRANSIENT

log = logging.getLogger(__name__)

_INTS = ("width", "height", "bit_depth")
_FLOATS = ("seconds", "colour_score", "confidence", "saturation")
INDEX_COLUMNS = [
    "input_uri",
    "input_sha256",
    "output_uri",
    "status",
    "reason",
    "width",
    "height",
    "input_mode",
    "bit_depth",
    "model",
    "model_version",
    "weights_sha256",
    "seconds",
    "note",
    "key",
    "ordinal",
    "colour_score",
    "colour_evidence",
    "colour_uncertain",
    "confidence",
    "treated_as",
    "saturation",
    "input_stamp",
    "colorized_at",
]
INDEX_DTYPES = {
    c: "Int64" if c in _INTS else "float64" if c in _FLOATS else "object" for c in INDEX_COLUMNS
} | {"ordinal": "int64", "colour_uncertain": "boolean"}
INDEX_SCHEMA = pa.schema(
    [
        (
            c,
            pa.int64()
            if t in ("Int64", "int64")
            else pa.float64()
            if t == "float64"
            else pa.bool_()
            if t == "boolean"
            else pa.string(),
        )
        for c, t in INDEX_DTYPES.items()
    ]
)
#: failure reason codes worth retrying on a plain rerun (the rest need ``--retry-failed``):
#: the downloads' transient ones, and colorize's own write, read, model and unexpected errors
TRANSIENT_REASONS = FETCH_TRANSIENT | {"write_failed", "read_failed", "model_error", "error"}
#: statuses that end an input's work for a model version
FINAL_STATUSES = frozenset({"ok", "skipped_color", "failed"})
#: one result of an input: the model version and the settings that change its pixels
_OWNER = ["input_uri", "model", "model_version", "saturation"]
#: rows written before the index had a ``saturation`` column were made at the default
LEGACY_SATURATION = 1.0
#: how a run's summary names each status
STATUS_WORDS = {"ok": "colorized", "skipped_color": "skipped as colour", "failed": "failed"}


def outcome_line(counts: dict[str, int], new: int) -> str:
    """A run's summary, e.g. ``15 colorized, 1 skipped as colour, 1 failed; 0 new``: what the
    index says of the collection's inputs, and how many of them this run worked on."""
    order = [*STATUS_WORDS, *sorted(set(counts) - set(STATUS_WORDS))]
    parts = [f"{counts[s]} {STATUS_WORDS.get(s, s)}" for s in order if counts.get(s)]
    return f"{', '.join(parts) or 'no inputs'}; {new} new"


def index_dir(output: str) -> str:
    """The folder of the index's part files."""
    return storage.join(output, "index")


def now() -> str:
    """A sortable UTC timestamp for ``colorized_at``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reason_code(reason: object) -> str:
    """``"write_failed: OSError: ..."`` -> ``"write_failed"``."""
    return str(reason or "").split(":", 1)[0].strip()


def empty_index() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_DTYPES.items()})


def _read_all(output: str) -> pd.DataFrame:
    """Every row of every part, with the part it came from (``_part``), in one dataset read.
    When that read fails, the parts are read one by one: a part that cannot be read
    (truncated, foreign) is moved to ``index/_unreadable/`` so that its inputs are redone, and
    said so in the log."""
    parts = storage.list_files(index_dir(output), "*.parquet")
    if not parts:
        return empty_index().assign(_part=pd.Series(dtype="object"))
    fs, _ = storage.get_fs(parts[0])
    paths = {fs._strip_protocol(p): p for p in parts}
    try:
        table = ds.dataset(list(paths), filesystem=fs, format="parquet", schema=INDEX_SCHEMA)
        frame = table.to_table(columns=[*INDEX_COLUMNS, "__filename"]).to_pandas()
        frame = frame.rename(columns={"__filename": "_part"})
        frame["_part"] = frame["_part"].map(lambda p: paths.get(p, p))
    except Exception:
        frame = _read_parts(parts)
    frame = frame.astype(INDEX_DTYPES)
    frame["saturation"] = frame["saturation"].fillna(LEGACY_SATURATION)
    return frame


def _read_parts(parts: list[str]) -> pd.DataFrame:
    frames = []
    for part in parts:
        try:
            frame = storage.read_parquet(part)
        except Exception as exc:
            aside = storage.join(posixpath.dirname(part), "_unreadable", posixpath.basename(part))
            log.warning("index part %s is unreadable (%s): moved to %s", part, exc, aside)
            storage.move(part, aside)
            continue
        frames.append(frame.reindex(columns=INDEX_COLUMNS).assign(_part=part))
    if not frames:
        return empty_index().assign(_part=pd.Series(dtype="object"))
    return pd.concat(frames, ignore_index=True)


def _newest_first(frame: pd.DataFrame) -> pd.DataFrame:
    order = frame["colorized_at"].fillna("").astype(str)
    return frame.assign(_order=order).sort_values("_order", ascending=False, kind="stable")


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return empty_index()
    latest = _newest_first(frame).drop_duplicates(_OWNER, keep="first")
    return latest.sort_values("ordinal", kind="stable")[INDEX_COLUMNS].reset_index(drop=True)


def read_index(output: str) -> pd.DataFrame:
    """The newest row of each input, model version and saturation (empty with
    :data:`INDEX_COLUMNS` when there is none yet), in collection order."""
    return _latest(_read_all(output))


def compact_index(output: str) -> pd.DataFrame:
    """Rewrite the parts that hold superseded rows without them (atomically; a part left empty
    is removed) and return the index as :func:`read_index` does, from the same one read. Safe
    to repeat after a crash."""
    frame = _read_all(output)
    if frame.empty:
        return empty_index()
    stale = _newest_first(frame).duplicated(_OWNER, keep="first")
    stale = stale[stale].index
    for part in frame.loc[stale, "_part"].unique():
        keep = frame[(frame["_part"] == part) & ~frame.index.isin(stale)]
        if keep.empty:
            storage.remove(part)
        else:
            table = keep[INDEX_COLUMNS].astype(INDEX_DTYPES)
            storage.write_parquet(part, table, INDEX_SCHEMA)
    return _latest(frame)


@dataclass
class RunPlan:
    """What a run does: output names and, per input, the previous row it redoes (if any)."""

    names: dict[str, str]
    #: key -> True when the index already gives this input (and model version) its name
    claimed: dict[str, bool] = field(default_factory=dict)
    #: key -> ``colorized_at`` of the row the input's new row supersedes ("" when none)
    redoes: dict[str, str] = field(default_factory=dict)


def _stem(uri: str, images: str) -> str:
    rel = uri[len(images) + 1 :] if uri.startswith(images + "/") else posixpath.basename(uri)
    return posixpath.splitext(rel)[0]


def _alternative(name: str, owner: tuple, salt: int) -> str:
    text = "|".join(map(str, owner[:3] if owner[3] == LEGACY_SATURATION else owner))
    digest = hashlib.sha256(f"{salt}|{text}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def plan_names(
    refs: list,
    base: dict[str, str],
    index: pd.DataFrame,
    images: str,
    result: tuple[str, str, float],
) -> tuple[dict[str, str], dict[str, bool]]:
    """Output names (no suffix) that no other owner has in this DST: an input keeps the name
    its earlier row of this ``result`` (model, version, saturation) gave it; a name owned by
    another input or result gets a distinct ``-xxxxxxxx`` suffix (a hash of the owner, so it
    is stable)."""
    owners: dict[str, tuple] = {}
    mine: dict[str, str] = {}
    for row in index[index["output_uri"].notna()].itertuples():
        stem = _stem(row.output_uri, images)
        owners[stem] = (row.input_uri, row.model, row.model_version, float(row.saturation))
        if (row.model, row.model_version, float(row.saturation)) == result:
            mine[row.input_uri] = stem
    names, claimed = {}, {}
    for ref in refs:
        owner = (ref.uri, *result)
        if ref.uri in mine:
            names[ref.key], claimed[ref.key] = mine[ref.uri], True
            continue
        name, salt = base[ref.key], 0
        while owners.get(name, owner) != owner:
            name, salt = _alternative(base[ref.key], owner, salt), salt + 1
        owners[name] = owner
        names[ref.key], claimed[ref.key] = name, False
    return names, claimed


def needs_work(row: pd.Series | None, stamp: str | None, retry_failed: bool, treat_as: str) -> bool:
    """Whether an input with this latest ``row`` (None: never seen) is (re)done by a run."""
    if row is None or row["status"] not in FINAL_STATUSES:
        return True
    if stamp is not None and pd.notna(row["input_stamp"]) and row["input_stamp"] != stamp:
        return True  # the file changed since: colorize it again, superseding the row
    if row["status"] == "failed":
        return retry_failed or reason_code(row["reason"]) in TRANSIENT_REASONS
    return row["status"] == "skipped_color" and treat_as == "monochrome"
