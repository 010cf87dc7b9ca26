"""The index of a colorize output, ``DST/index/part-*.parquet``, and what a run plans from it.

One row per input and result (:data:`INDEX_COLUMNS`; a result is a model version and the
settings that change the pixels: ``saturation`` and the input's colour hints), written a batch
at a time as immutable part files. A rerun reads the index to decide, before any work:

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from koala import storage
from koala.fetch import TRANSIENT_REASONS as FETCH_TRANSIENT

log = logging.getLogger(__name__)

_INTS = ("width", "height", "bit_depth", "hints")
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
    "hints",
    "hints_digest",
    "input_name",
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
#: one result of an input: the model version and the settings that change its pixels (the
#: colour strength, and the colour hints it was given: ``hints_digest``, None for none)
_OWNER = ["input_uri", "model", "model_version", "saturation", "hints_digest"]
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


def empty_index(columns: list[str] | None = None) -> pd.DataFrame:
    """An index with no rows (``columns``, default all, with their dtypes)."""
    return pd.DataFrame({c: pd.Series(dtype=INDEX_DTYPES[c]) for c in columns or INDEX_COLUMNS})


def _read_all(output: str, columns: list[str]) -> pd.DataFrame:
    """Every row of every part (``columns`` of it), with the part it came from (``_part``) and
    its position there (``_row``), in one dataset read. When that read fails, the parts are
    read one by one: a part that cannot be read (truncated, foreign) is moved to
    ``index/_unreadable/`` so that its inputs are redone, and said so in the log."""
    parts = storage.list_files(index_dir(output), "*.parquet")
    if not parts:
        return empty_index(columns).assign(_part=pd.Series(dtype="object"), _row=0)
    try:
        frame = _read_dataset(parts, columns)
    except Exception:
        frame = _read_parts(parts, columns)
        frame["_row"] = frame.groupby("_part", observed=True).cumcount()
    frame = frame.astype({c: INDEX_DTYPES[c] for c in columns}, copy=False)
    if "saturation" in frame:
        frame["saturation"] = frame["saturation"].fillna(LEGACY_SATURATION)
    return frame


def _read_dataset(parts: list[str], columns: list[str]) -> pd.DataFrame:
    """The parts as one dataset, converted to pandas batch by batch (Arrow holds one batch
    at a time, not the whole index), with each row's part and position in it."""
    fs, _ = storage.get_fs(parts[0])
    paths = {fs._strip_protocol(p): p for p in parts}
    dataset = ds.dataset(list(paths), filesystem=fs, format="parquet", schema=INDEX_SCHEMA)
    frames, codes, rows = [], [], []
    for code, fragment in enumerate(dataset.get_fragments()):
        start = 0
        for batch in fragment.to_batches(columns=columns, schema=INDEX_SCHEMA):
            frames.append(batch.to_pandas(split_blocks=True))
            codes.append(np.full(batch.num_rows, code, dtype=np.int32))
            rows.append(np.arange(start, start + batch.num_rows))
            start += batch.num_rows
    if not frames:
        return empty_index(columns).assign(_part=pd.Series(dtype="object"), _row=0)
    frame = pd.concat(frames, ignore_index=True, copy=False)
    del frames
    names = [paths[f.path] for f in dataset.get_fragments()]
    frame["_part"] = pd.Categorical.from_codes(np.concatenate(codes), categories=names)
    frame["_row"] = np.concatenate(rows)
    return frame


def _read_parts(parts: list[str], columns: list[str]) -> pd.DataFrame:
    frames = []
    for part in parts:
        try:
            frame = storage.read_parquet(part)
        except Exception as exc:
            aside = storage.join(posixpath.dirname(part), "_unreadable", posixpath.basename(part))
            log.warning("index part %s is unreadable (%s): moved to %s", part, exc, aside)
            storage.move(part, aside)
            continue
        frames.append(frame.reindex(columns=columns).assign(_part=part))
    if not frames:
        return empty_index(columns).assign(_part=pd.Series(dtype="object"))
    return pd.concat(frames, ignore_index=True)


def _newest_first(frame: pd.DataFrame) -> pd.DataFrame:
    order = frame["colorized_at"].fillna("").astype(str)
    return frame.assign(_order=order).sort_values("_order", ascending=False, kind="stable")


def _latest(frame: pd.DataFrame, stale: pd.Index, columns: list[str]) -> pd.DataFrame:
    """The rows not ``stale``, in collection order, without the bookkeeping columns."""
    if frame.empty:
        return empty_index(columns)
    latest = (frame.drop(index=stale) if len(stale) else frame)[columns]  # one copy
    if not latest["ordinal"].is_monotonic_increasing:
        latest = latest.sort_values("ordinal", kind="stable")
    latest.index = pd.RangeIndex(len(latest))
    return latest


def _stale(frame: pd.DataFrame) -> pd.Index:
    """The rows superseded by a newer row of the same input and result."""
    owners = [c for c in _OWNER if c in frame]
    dup = _newest_first(frame[[*owners, "colorized_at"]]).duplicated(owners, keep="first")
    return dup[dup].index


def read_index(output: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The newest row of each input, model version and saturation (``columns`` of it, default
    all; empty when there is none yet), in collection order."""
    columns = _with_owner(columns)
    frame = _read_all(output, columns)
    return _latest(frame, _stale(frame), columns)


def _with_owner(columns: list[str] | None) -> list[str]:
    """``columns`` and those that tell rows apart (owner, time, order), in index order."""
    wanted = set(columns or INDEX_COLUMNS) | {*_OWNER, "colorized_at", "ordinal"}
    return [c for c in INDEX_COLUMNS if c in wanted]


#: the columns a run's plan needs (names, what is done, what changed, what to retry)
PLAN_COLUMNS = [
    "input_uri",
    "output_uri",
    "status",
    "reason",
    "model",
    "model_version",
    "saturation",
    "input_stamp",
    "colorized_at",
    "ordinal",
    "hints_digest",
]
#: a part with fewer rows is small (one run writes a part per batch): compaction merges small
#: parts into parts of about this many rows, so that at most :data:`SMALL_PARTS_KEPT` stay
#: (rewriting at most this many rows per run; reading stays one part however many runs wrote)
PART_ROWS = 100_000
SMALL_PARTS_KEPT = 1


def compact_index(output: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Rewrite the parts that hold superseded rows without them (a part left empty is
    removed), merge small parts into larger ones when more than :data:`SMALL_PARTS_KEPT` are,
    and return the index as :func:`read_index` does (``columns`` of it), from the same read.

    Every write is atomic and a merged part is written before the parts it replaces are
    removed, so a crash at any point loses no row (a row then in two parts is one row to
    :func:`read_index`, and the next compaction removes the copy). Safe to repeat."""
    columns = _with_owner(columns)
    frame = _read_all(output, columns)
    if frame.empty:
        return empty_index(columns)
    stale = _stale(frame)
    dropped = frame.loc[stale, ["_part", "_row"]]
    for part, rows in dropped.groupby("_part", observed=True)["_row"]:
        _rewrite_part(str(part), frame[frame["_part"] == part], set(rows))
    counts = frame.drop(index=stale).groupby("_part", observed=True).size()
    small = [str(p) for p, n in counts.items() if n < PART_ROWS]
    if len(small) > SMALL_PARTS_KEPT:
        _merge_parts(output, small, counts)
    return _latest(frame, stale, columns)


def _rewrite_part(part: str, rows: pd.DataFrame, drop: set[int]) -> None:
    """Write ``part`` again without its rows at positions ``drop``; ``rows`` are its rows as
    the index read them (checked against the part, so a part changed since is left alone)."""
    full = storage.read_parquet(part)
    if len(full) != len(rows) or list(full["input_uri"]) != list(rows["input_uri"]):
        log.warning("index part %s changed while compacting: left for the next run", part)
        return
    keep = full[~full.index.isin(list(drop))]
    if keep.empty:
        storage.remove(part)
    else:
        storage.write_parquet(
            part, keep.reindex(columns=INDEX_COLUMNS).astype(INDEX_DTYPES), INDEX_SCHEMA
        )


def _merge_parts(output: str, small: list[str], counts: pd.Series) -> None:
    """Merge the ``small`` parts, in name order, into parts of about :data:`PART_ROWS` rows
    (``compact-<first ordinal>-<digest of the merged names>.parquet``), each written before
    the parts it holds are removed."""
    group: list[str] = []
    rows = 0
    for part in sorted(small):
        group.append(part)
        rows += int(counts[part])
        if rows >= PART_ROWS or part == max(small):
            _merge(output, group)
            group, rows = [], 0


def _merge(output: str, parts: list[str]) -> None:
    frames = [f for p in parts if storage.exists(p) and len(f := storage.read_parquet(p))]
    if len(parts) < 2 or not frames:
        return
    merged = pd.concat(frames, ignore_index=True).reindex(columns=INDEX_COLUMNS)
    merged = merged.astype(INDEX_DTYPES).sort_values("ordinal", kind="stable")
    digest = hashlib.sha256("|".join(map(posixpath.basename, parts)).encode()).hexdigest()[:12]
    first = int(merged["ordinal"].iloc[0])
    target = storage.join(index_dir(output), f"compact-{first:08d}-{digest}.parquet")
    storage.write_parquet(target, merged, INDEX_SCHEMA)
    for part in parts:
        storage.remove(part)


@dataclass
class RunPlan:
    """What a run does: output names and, per input, the previous row it redoes (if any)."""

    names: dict[str, str]
    #: key -> True when the index already gives this input (and model version) its name
    claimed: dict[str, bool] = field(default_factory=dict)
    #: key -> ``colorized_at`` of the row the input's new row supersedes ("" when none)
    redoes: dict[str, str] = field(default_factory=dict)
    #: key -> the input's colour hints (:class:`koala.hints.Hint`; inputs with hints only)
    hints: dict[str, list] = field(default_factory=dict)
    #: key -> the digest of the input's hints (:func:`koala.hints.digest`)
    digests: dict[str, str] = field(default_factory=dict)


def _stem(uri: str, images: str) -> str:
    rel = uri[len(images) + 1 :] if uri.startswith(images + "/") else posixpath.basename(uri)
    return posixpath.splitext(rel)[0]


def hint_digest(value: object) -> str | None:
    """A row's (or run's) ``hints_digest``: None for no hints (also NA in an older index)."""
    return value if isinstance(value, str) and value else None


def _alternative(name: str, owner: tuple, salt: int) -> str:
    kept = owner[:3] if owner[3] == LEGACY_SATURATION else owner[:4]
    text = "|".join(map(str, kept if owner[4] is None else (*kept, owner[4])))
    digest = hashlib.sha256(f"{salt}|{text}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def plan_names(
    refs: list,
    base: dict[str, str],
    index: pd.DataFrame,
    images: str,
    result: tuple[str, str, float],
    digests: dict[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, bool]]:
    """Output names (no suffix) that no other owner has in this DST: an input keeps the name
    its earlier row of this ``result`` (model, version, saturation, and the input's hints:
    ``digests`` by key) gave it; a name owned by another input or result gets a distinct
    ``-xxxxxxxx`` suffix (a hash of the owner, so it is stable)."""
    digests = digests or {}
    owner_columns = ["input_uri", "output_uri", "model", "model_version", "saturation"]
    named = index.loc[index["output_uri"].notna(), [*owner_columns, "hints_digest"]]
    stems = [_stem(out, images) for out in named["output_uri"].to_numpy()]
    uris = named["input_uri"].to_numpy()
    hinted = [hint_digest(d) for d in named["hints_digest"].to_numpy()]
    same = (
        (named["model"] == result[0])
        & (named["model_version"] == result[1])
        & (named["saturation"].astype(float) == result[2])
    ).to_numpy()
    mine = {(uris[i], hinted[i]): stems[i] for i in same.nonzero()[0]}
    owners: dict[str, int | tuple] = dict(zip(stems, range(len(stems)), strict=True))

    def owner_of(name: str, default: tuple) -> tuple:
        found = owners.get(name, default)
        if isinstance(found, tuple):
            return found
        row = named.iloc[found]
        result = (row["model"], row["model_version"], float(row["saturation"]))
        return (row["input_uri"], *result, hinted[found])

    names, claimed = {}, {}
    for ref in refs:
        owner = (ref.uri, *result, digests.get(ref.key))
        if (ref.uri, owner[4]) in mine:
            names[ref.key], claimed[ref.key] = mine[(ref.uri, owner[4])], True
            continue
        name, salt = base[ref.key], 0
        while owner_of(name, owner) != owner:
            name, salt = _alternative(base[ref.key], owner, salt), salt + 1
        owners[name] = owner
        names[ref.key], claimed[ref.key] = name, False
    return names, claimed


def needs_work(
    rows: pd.DataFrame, stamps: pd.Series, retry_failed: bool, treat_as: str
) -> pd.Series:
    """Which inputs a run (re)does, given each one's latest ``rows`` (all NA: never seen) and
    its listing ``stamps`` (aligned; None: unknown): those never done or not finished, those
    whose file changed since their row, failures worth retrying and, with ``treat_as``
    monochrome, inputs skipped as colour."""
    status = rows["status"]
    unfinished = ~status.isin(FINAL_STATUSES)
    seen = rows["input_stamp"]
    changed = stamps.notna() & seen.notna() & (seen.astype(object) != stamps.astype(object))
    codes = rows["reason"].fillna("").astype(str).str.split(":", n=1).str[0].str.strip()
    failed = (status == "failed") & (retry_failed | codes.isin(TRANSIENT_REASONS))
    recheck = (status == "skipped_color") & (treat_as == "monochrome")
    return (unfinished | changed | failed | recheck).fillna(True).astype(bool)
