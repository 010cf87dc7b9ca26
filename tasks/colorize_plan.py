"""Planning a ``colorize-archive`` run, without torch: the checks before any work, the inputs
and their output names, what is already done, and the batches left to do. The CLI runs this
part first, so a bad argument or input fails in about a second; tasks/colorize.py does the work.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import Counter
from functools import lru_cache
from urllib.parse import urlsplit

import pandas as pd

from koala import lease, storage
from koala.choices import FORMAT_CHOICES, FORMATS, TREAT_AS
from koala.errors import KoalaError
from koala.hints import digest
from koala.settings import get_settings
from koala.sources import (
    InputRef,
    check_listed_inputs_apart,
    check_output_apart,
    enumerate_inputs,
    mark_output,
)
from koala.uris import split_member_uri
from models.cards import find_card
from tasks.archive_index import (
    PLAN_COLUMNS,
    RunPlan,
    compact_index,
    hint_digest,
    index_dir,
    needs_work,
    plan_names,
)
from tasks.colorize_hints import read_hint_files
from tasks.config import ColorizeConfig


def resolve_registry(registry: str | None) -> str:
    """The dataset root whose models/ a run uses: ``registry``, else ``KOALA_DATA_ROOT``."""
    return registry or get_settings().data_root


def check_options(cfg: ColorizeConfig) -> None:
    """The run's format, --treat-as and saturation are ones Koala knows."""
    if cfg.format not in FORMAT_CHOICES:
        raise KoalaError(f"unknown format {cfg.format!r}; choose from {', '.join(FORMAT_CHOICES)}")
    if cfg.treat_as not in TREAT_AS:
        raise KoalaError(f"unknown --treat-as {cfg.treat_as!r}; choose from {', '.join(TREAT_AS)}")
    if not 0.0 <= cfg.saturation <= 4.0:
        raise KoalaError(f"--saturation {cfg.saturation} is outside 0..4")


def prepare_run(
    source: str, cfg: ColorizeConfig
) -> tuple[list[InputRef], RunPlan, dict, pd.DataFrame]:
    """Check everything but the model's weights before any work, failing with one line that
    names the problem: the options, the model's card, the output (writable, apart from the
    input) and the input (exists, not empty). Then it holds the output's lease
    (:mod:`koala.lease`: a second run is refused, naming the first) until the caller's
    ``lease.release(cfg.output)``. Returns every input, the run's plan, the model's card and the
    index so far (newest row per input and result; the columns planning needs)."""
    check_options(cfg)
    check_output_apart([source], cfg.output)
    card = find_card(cfg.registry, cfg.model)  # an unknown model fails before any listing
    storage.check_writable(cfg.output)
    mark_output(cfg.output, "colorize")
    lease.take(cfg.output, f"a colorize run of {source!r}")  # one run at a time per output
    try:
        storage.remove_stale_temporaries(cfg.output)
        refs = enumerate_inputs([source], storage.join(cfg.output, "_staging"))
        plan, index = plan_listed(refs, cfg, card, source)
    except BaseException:
        lease.release(cfg.output)
        raise
    return refs, plan, card, index


def plan_listed(
    refs: list[InputRef], cfg: ColorizeConfig, card: dict, source: str | None = None
) -> tuple[RunPlan, pd.DataFrame]:
    """The plan of a run over inputs already listed: their colour hints (read and checked),
    their output names against the index (compacted first) and the index itself (its
    :data:`PLAN_COLUMNS`)."""
    check_listed_inputs_apart(refs, cfg.output)
    names = {r.key: relative_name(r) for r in refs}
    found = read_hint_files(refs, names, source, cfg.hints, cfg.output)
    hints = {k: h for k, (h, _) in found.items()}
    digests = {k: digest(h) for k, h in hints.items()}
    # the columns planning needs (also finishes a compaction that a killed run left half done)
    index = compact_index(cfg.output, PLAN_COLUMNS)
    images = storage.join(cfg.output, "images")
    result = (card["name"], card["version"], float(cfg.saturation))
    base = output_names(refs, cfg.saturation, digests)
    names, claimed = plan_names(refs, base, index, images, result, digests)
    return RunPlan(names, claimed, hints=hints, digests=digests), index


def output_uri(cfg: ColorizeConfig, name: str, ext: str | None = None) -> str:
    """Where the colorized image of an input named ``name`` (relative, no suffix) goes."""
    return storage.join(cfg.output, "images", name + (ext or FORMATS[cfg.format]))


def part_uri(
    output: str,
    version: str,
    refs: list[InputRef],
    redoes: dict[str, str],
    saturation: float,
    digests: dict[str, str] | None = None,
) -> str:
    """The index part of a batch: named by the model version and saturation, the batch's
    inputs, their hints' ``digests`` and the rows they supersede (so a retry never takes the
    name of the part it supersedes)."""
    h = hashlib.sha256(version.encode() + (b"" if saturation == 1.0 else f"|{saturation}".encode()))
    for ref in refs:
        hinted = f"|{digests[ref.key]}" if digests and ref.key in digests else ""
        h.update(f"{ref.key}|{redoes.get(ref.key, '')}{hinted}".encode())
    return storage.join(
        index_dir(output), f"part-{refs[0].ordinal:08d}-{h.hexdigest()[:12]}.parquet"
    )


@lru_cache(maxsize=64)
def _root(source: str) -> str:
    """A source's root as its inputs' URIs start (a local one absolute)."""
    root = source.rstrip("/")
    return os.path.abspath(storage.local_path(root)) if storage.is_local(root) else root


def relative_name(ref: InputRef) -> str:
    """An input's path inside its collection, without suffix: the member of an archive, the
    path below a folder or prefix, or host/path of a URL."""
    uri, proto = ref.uri, ref.uri.split("://", 1)[0] if "://" in ref.uri else "file"
    if member := split_member_uri(uri):
        rel = member[1]  # unsafe parts ("..", "/") are dropped below
    elif proto in ("http", "https"):
        parts = urlsplit(uri)
        rel = parts.netloc + parts.path
    else:
        root = _root(ref.source)
        rel = uri[len(root) + 1 :] if uri.startswith(root + "/") else posixpath.basename(uri)
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return posixpath.splitext("/".join(parts) or ref.key)[0]


def saturation_tag(saturation: float) -> str:
    """What a saturation other than 1 adds to the names of its files: ``-saturation1.4``."""
    return "" if saturation == 1.0 else f"-saturation{saturation:g}"


def hints_tag(digest: str | None) -> str:
    """What colour hints add to the name of a result: ``-hints`` and 8 digits of their digest
    (an edited hints file makes a new result beside the old one)."""
    return f"-hints{digest[:8]}" if digest else ""


def output_names(
    refs: list[InputRef], saturation: float = 1.0, digests: dict[str, str] | None = None
) -> dict[str, str]:
    """key -> output name; inputs whose names collide (``a.png`` and ``a.tif``) get their key
    appended, so no output overwrites another; a saturation other than 1 is in the name
    (``scan-saturation1.4``), and so are an input's hints (:func:`hints_tag`)."""
    digests = digests or {}
    names = {
        ref.key: relative_name(ref) + saturation_tag(saturation) + hints_tag(digests.get(ref.key))
        for ref in refs
    }
    seen = Counter(names.values())
    return {k: f"{n}-{k[:8]}" if seen[n] > 1 else n for k, n in names.items()}


def result_rows(
    index: pd.DataFrame,
    card: dict,
    saturation: float,
    columns: list[str] | None = None,
    hinted: dict[str, str | None] | None = None,
) -> pd.DataFrame:
    """The index rows of one result (``columns`` of them, default all): made with the card's
    model version at ``saturation`` and, when ``hinted`` (input URI -> its hints' digest, None
    for none) is given, with each input's hints as they are now."""
    same = (index["model"] == card["name"]) & (index["model_version"] == card["version"])
    same &= index["saturation"] == float(saturation)
    if hinted is not None:
        now = index["input_uri"].map(hinted)
        was = index["hints_digest"].map(hint_digest)
        same &= (now.isna() & was.isna()) | (now == was)
    return index.loc[same, columns or index.columns]


def uri_digests(refs: list[InputRef], digests: dict[str, str]) -> dict[str, str | None]:
    """Input URI -> the digest of its hints (None: no hints), from ``digests`` by key."""
    return {ref.uri: digests.get(ref.key) for ref in refs}


def run_rows(
    index: pd.DataFrame,
    refs: list[InputRef],
    card: dict,
    saturation: float,
    digests: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The index rows of this run: the inputs listed now, done with the card's version at
    ``saturation`` and their hints (``digests`` by key)."""
    mine = result_rows(index, card, saturation, hinted=uri_digests(refs, digests or {}))
    return mine[mine["input_uri"].isin({r.uri for r in refs})]


def status_counts(rows: pd.DataFrame) -> dict[str, int]:
    """How many rows have each status."""
    return {str(k): int(v) for k, v in rows["status"].value_counts().items()}


def failure_reasons(rows: pd.DataFrame) -> dict[str, int]:
    """How many failed rows have each reason code (``corrupt``, ``too_small``...)."""
    failed = rows[rows["status"] == "failed"]["reason"]
    codes = failed.map(lambda r: str(r or "").split(":", 1)[0].strip() or "unknown")
    return {str(k): int(v) for k, v in codes.value_counts().items()}


def run_summary(output: str, spec: str, rows: pd.DataFrame, sheet: str, new: int) -> dict:
    """What a colorize run reports: model, where images, index and contact sheet are, the
    status counts of its rows and how many inputs it worked on."""
    out = output.rstrip("/")
    return {
        "model": spec,
        "inputs": len(rows),
        "new": new,
        "counts": status_counts(rows),
        "reasons": failure_reasons(rows),
        "index": f"{out}/index",
        "contact_sheet": sheet,
        "images": f"{out}/images",
    }


def plan_batches(
    refs: list[InputRef], plan: RunPlan, index: pd.DataFrame, card: dict, cfg: ColorizeConfig
) -> list[list[InputRef]]:
    """Fixed blocks of ``cfg.batch_size`` inputs in collection order, less the inputs that need
    no work (:func:`tasks.archive_index.needs_work`); records in ``plan`` which row each
    redone input supersedes.

    Blocks do not depend on what is done, so a batch redone after a crash has the same part
    name as the one a lingering worker of the killed run may still write: one replaces the
    other and no row is duplicated."""
    done = ["input_uri", "status", "reason", "input_stamp", "colorized_at", "hints_digest"]
    mine = result_rows(index, card, cfg.saturation, done, uri_digests(refs, plan.digests))
    uris = [ref.uri for ref in refs]
    rows = mine.drop_duplicates("input_uri", keep="last").set_index("input_uri").reindex(uris)
    stamps = pd.Series([ref.stamp for ref in refs], index=rows.index, dtype=object)
    need = needs_work(rows, stamps, cfg.retry_failed, cfg.treat_as).to_numpy()
    superseded = rows["colorized_at"].fillna("").astype(str).to_numpy()
    todo = set()
    for ref, redo, at in zip(refs, need, superseded, strict=True):
        if redo:
            todo.add(ref.key)
            plan.redoes[ref.key] = at
    size = cfg.batch_size
    blocks = [refs[i : i + size] for i in range(0, len(refs), size)]
    return [kept for b in blocks if (kept := [r for r in b if r.key in todo])]


def group_batches(batches: list[list[InputRef]], most: int = 4, tasks: int = 8) -> list:
    """Consecutive batches grouped into tasks of up to ``most``, but at least ``tasks`` tasks
    when there are that many batches, so every worker gets work."""
    size = max(1, min(most, len(batches) // tasks))
    return [batches[i : i + size] for i in range(0, len(batches), size)]
