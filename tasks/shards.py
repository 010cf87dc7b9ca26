"""Turn staged chunks into the dataset: dedup, splits, WebDataset shards, stats and the index.

Everything here is a pure function of the staged chunk records, so a rerun (or a resumed run)
plans exactly the same shards, and a shard whose stats JSON exists is never rewritten.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from koala import storage
from koala.sources import check_output_apart
from koala.uris import split_member_uri
from tasks.config import BuildConfig
from tasks.ingest import RECORD_COLUMNS

SPLITS = ("train", "val", "test")
#: fixed tar member mtime, so that the same samples give byte-identical shards
SHARD_MTIME = 0.0


#: folder names that say which split an image belongs to, for ``--splits folders``
FOLDER_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def parse_splits(text: str) -> dict[str, float] | None:
    """``"0.9,0.05,0.05"`` to ``{"train": 0.9, "val": 0.05, "test": 0.05}``; ``"folders"`` to
    ``None``: take the split from a ``train``/``val``/``test`` folder in each input's path."""
    if text.strip().lower() == "folders":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--splits {text!r}: expected three numbers like 0.9,0.05,0.05") from None
    if len(values) != 3 or any(v < 0 for v in values) or not np.isclose(sum(values), 1.0):
        raise ValueError(f"--splits {text!r}: expected three non-negative ratios summing to 1")
    return dict(zip(SPLITS, values, strict=True))


DEFAULT_RATIOS = parse_splits(BuildConfig.splits)


def preflight(sources: list[str], out: str, splits: str) -> dict[str, float] | None:
    """build-dataset's checks that fail at once, before any work (and before Prefect loads):
    output apart from every input and writable, split ratios valid."""
    ratios = parse_splits(splits)
    check_output_apart(sources, out)
    storage.check_writable(out)
    return ratios


def split_of(content_hash: str, ratios: dict[str, float]) -> str:
    """The split of an image, from its content hash: the same picture always lands alike."""
    u = int(content_hash[:15], 16) / float(16**15)
    edge = 0.0
    for name, ratio in ratios.items():
        edge += ratio
        if u < edge:
            return name
    return list(ratios)[-1]


def folder_split(uri: str) -> str | None:
    """The split named by the nearest ``train``/``val``/``test`` folder above the file, if any."""
    member = split_member_uri(uri)  # an archive member: the archive's path, then the member's
    pieces = [member[2], member[1]] if member else [uri]  # a local name may hold '::'
    parts = [p for piece in pieces for p in piece.split("/")]
    for part in reversed(parts[:-1]):
        if part.lower() in FOLDER_SPLITS:
            return FOLDER_SPLITS[part.lower()]
    return None


def shard_name(split: str, number: int) -> str:
    """``train-000003``: the stem of a shard's tar and stats files."""
    return f"{split}-{number:06d}"


def plan_dataset(
    records: pd.DataFrame, ratios: dict[str, float] | None, shard_size: int
) -> pd.DataFrame:
    """The index: records in input order with duplicates rejected and split/shard assigned.

    An accepted image whose decoded pixels equal an earlier one's is rejected as ``duplicate``.
    Accepted images are spread over splits by content hash (or, with ``ratios=None``, by their
    ``train``/``val``/``test`` folder, falling back to the hash with the default ratios) and
    packed ``shard_size`` to a shard in input order. Rejected rows have no split or shard.
    """
    idx = records.sort_values("ordinal", kind="stable").reset_index(drop=True)
    accepted = idx["status"] == "accepted"
    first_key = idx[accepted].groupby("pixel_sha256")["key"].transform("first")
    dup = accepted & idx["pixel_sha256"].notna() & idx["pixel_sha256"].duplicated()
    idx.loc[dup, "status"] = "rejected"
    idx.loc[dup, "reason"] = "duplicate"
    idx.loc[dup, "detail"] = "same pixels as key " + first_key[dup].astype(str)
    accepted = idx["status"] == "accepted"
    idx["split"] = None
    idx["shard"] = None
    idx.loc[accepted, "split"] = [
        (ratios is None and folder_split(uri)) or split_of(h, ratios or DEFAULT_RATIOS)
        for h, uri in zip(idx.loc[accepted, "pixel_sha256"], idx.loc[accepted, "uri"], strict=True)
    ]
    for split in SPLITS:
        rows = idx.index[accepted & (idx["split"] == split)]
        idx.loc[rows, "shard"] = [shard_name(split, i // shard_size) for i in range(len(rows))]
    return idx


@dataclass(frozen=True)
class ShardJob:
    """What one shard holds: its name, and for each member the key and the staged chunk tar."""

    shard: str
    split: str
    members: list[tuple[str, str]]
    rejected: dict[str, int]
    ingest_seconds: float


def shard_jobs(index: pd.DataFrame, chunk_tars: dict[int, str], chunk_size: int) -> list[ShardJob]:
    """One job per shard; rejected inputs are counted in the stats of the shard holding the
    closest accepted input before them (or the first shard), as img2dataset does per shard."""
    acc = index[index["status"] == "accepted"]
    if acc.empty:
        return []
    holder = index["shard"].where(index["status"] == "accepted").ffill().bfill()
    rejected_by_shard: dict[str, Counter] = {}
    for shard, reason in zip(
        holder[index["status"] != "accepted"],
        index.loc[index["status"] != "accepted", "reason"],
        strict=True,
    ):
        rejected_by_shard.setdefault(shard, Counter())[reason] += 1
    jobs = []
    for shard, rows in acc.groupby("shard", sort=True):
        members = [
            (k, chunk_tars[o // chunk_size])
            for k, o in zip(rows["key"], rows["ordinal"], strict=True)
        ]
        jobs.append(
            ShardJob(
                shard,
                rows["split"].iloc[0],
                members,
                dict(rejected_by_shard.get(shard, {})),
                float(rows["seconds"].sum()),
            )
        )
    return jobs


def shard_paths(out: str, shard: str) -> tuple[str, str]:
    """(tar URL, stats JSON URL) of a shard under the dataset root."""
    base = storage.join(out, "shards", shard)
    return f"{base}.tar", f"{base}.stats.json"


def missing_chunk_tars(out: str, jobs: list[ShardJob], staged: list[tuple[str, str]]) -> set[int]:
    """Chunks whose staged tar is gone but which an incomplete shard still needs."""
    needed = {
        chunk
        for job in jobs
        if not storage.exists(shard_paths(out, job.shard)[1])
        for _, chunk in job.members
    }
    return {
        i
        for i, (tar_url, _) in enumerate(staged)
        if tar_url in needed and not storage.exists(tar_url)
    }


def _read_members(chunk_tar: str, keys: set[str]) -> dict[str, bytes]:
    """The ``{key}.jpg``/``{key}.json`` members of ``keys`` from one staged chunk tar."""
    fs, path = storage.get_fs(chunk_tar)
    out = {}
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for m in tar:
            if m.name.split(".", 1)[0] in keys:
                out[m.name] = tar.extractfile(m).read()
    return out


def write_shard(out: str, job: ShardJob) -> dict:
    """Write one shard tar and then its stats JSON (the completion marker); skip if complete."""
    tar_url, stats_url = shard_paths(out, job.shard)
    if storage.exists(stats_url):
        return json.loads(storage.read_bytes(stats_url)) | {"skipped": True}
    t0 = time.perf_counter()
    by_chunk: dict[str, set[str]] = {}
    for key, chunk in job.members:
        by_chunk.setdefault(chunk, set()).add(key)
    staged: dict[str, bytes] = {}
    total = 0
    import webdataset as wds  # here, not at import: build-dataset's checks stay quick

    with storage.atomic_open(tar_url) as f:
        writer = wds.TarWriter(f, mtime=SHARD_MTIME, encoder=False)
        for key, chunk in job.members:
            if f"{key}.jpg" not in staged:
                staged.update(_read_members(chunk, by_chunk.pop(chunk)))
            sample = {
                "__key__": key,
                "jpg": staged.pop(f"{key}.jpg"),
                "json": staged.pop(f"{key}.json"),
            }
            total += len(sample["jpg"]) + len(sample["json"])
            writer.write(sample)
        writer.close()
    stats = {
        "shard": job.shard,
        "split": job.split,
        "count": len(job.members),
        "bytes": total,
        "seconds": round(job.ingest_seconds + time.perf_counter() - t0, 3),
        "write_seconds": round(time.perf_counter() - t0, 3),
        "reasons": {"accepted": len(job.members), **job.rejected},
        "first_key": job.members[0][0],
        "last_key": job.members[-1][0],
    }
    storage.atomic_write_bytes(stats_url, json.dumps(stats, indent=2).encode())
    return stats


#: ``index.parquet`` columns: a chunk record's, with the split and shard after the key
INDEX_COLUMNS = ["key", "split", "shard", *(c for c in RECORD_COLUMNS if c != "key")]


def write_index(out: str, index: pd.DataFrame) -> str:
    """Write ``index.parquet`` atomically; return its URL."""
    url = storage.join(out, "index.parquet")
    frame = index[INDEX_COLUMNS]
    storage.write_parquet(url, frame)
    return url


def run_stats(index: pd.DataFrame, shard_stats: list[dict], seconds: float) -> dict:
    """Totals for the whole run, written as ``stats.json`` beside the index."""
    reasons = Counter(index.loc[index["status"] != "accepted", "reason"])
    return {
        "inputs": len(index),
        "accepted": int((index["status"] == "accepted").sum()),
        "rejected": int((index["status"] != "accepted").sum()),
        "reasons": dict(sorted(reasons.items())),
        "splits": {s: int((index["split"] == s).sum()) for s in SPLITS},
        "shards": len(shard_stats),
        "bytes": int(sum(s["bytes"] for s in shard_stats)),
        "seconds": round(seconds, 3),
    }
