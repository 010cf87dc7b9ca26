"""The index of a long-lived output stays a few parts (issue 29): small parts are merged, a
crash in the middle of a merge loses no row and leaves no duplicate, and planning a rerun reads
only the columns it needs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from koala import storage
from tasks import archive_index
from tasks.archive_index import (
    INDEX_COLUMNS,
    INDEX_DTYPES,
    INDEX_SCHEMA,
    PLAN_COLUMNS,
    SMALL_PARTS_KEPT,
    compact_index,
    read_index,
)


def rows(start: int, stop: int, at: str, version: str = "v1") -> pd.DataFrame:
    """Index rows for inputs ``start..stop`` as a colorize batch writes them."""
    frame = pd.DataFrame(
        [
            {
                "input_uri": f"/archive/scan-{i:05d}.tif",
                "output_uri": f"/out/images/scan-{i:05d}.jpg",
                "status": "ok",
                "model": "chroma_unet",
                "model_version": version,
                "key": f"{i:016x}",
                "ordinal": i,
                "saturation": 1.0,
                "input_stamp": f"{i}-1",
                "colorized_at": at,
                "width": 64,
            }
            for i in range(start, stop)
        ]
    )
    return frame.reindex(columns=INDEX_COLUMNS).astype(INDEX_DTYPES)


def write_part(out: Path, name: str, frame: pd.DataFrame) -> None:
    storage.write_parquet(str(out / "index" / name), frame, INDEX_SCHEMA)


def parts(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "index").glob("*.parquet"))


RUNS = 30


def test_small_runs_are_merged_into_few_parts_without_losing_a_row(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for run in range(RUNS):  # each run: two batches of 8, compaction at its end
        for b in range(2):
            start = (2 * run + b) * 8
            write_part(
                out, f"part-{start:08d}-r{run}.parquet", rows(start, start + 8, f"t{run:03d}")
            )
        compact_index(str(out))
        assert len(parts(out)) == SMALL_PARTS_KEPT, parts(out)
    index = read_index(str(out))
    assert len(index) == RUNS * 16
    assert index["ordinal"].tolist() == list(range(len(index)))  # every row once, in order
    assert any(name.startswith("compact-") for name in parts(out))
    kept = index.set_index("ordinal")
    assert kept.loc[17, "colorized_at"] == "t001" and kept.loc[17, "width"] == 64


def test_a_crash_in_a_merge_leaves_one_row_each_and_the_next_compaction_cleans(
    tmp_path: Path,
) -> None:
    """The merged part is written before the small ones are removed: a crash between leaves
    each row in two parts; readers see it once and the next compaction drops the copy."""
    out = tmp_path / "out"
    for i in range(4):
        write_part(out, f"part-{i * 8:08d}-a.parquet", rows(i * 8, i * 8 + 8, "t1"))
    merged = pd.concat([storage.read_parquet(str(p)) for p in (out / "index").glob("*.parquet")])
    write_part(out, "compact-00000000-crashed.parquet", merged.sort_values("ordinal"))
    assert len(read_index(str(out))) == 32
    assert len(compact_index(str(out))) == 32
    assert len(pd.concat([storage.read_parquet(str(out / "index" / p)) for p in parts(out)])) == 32


def test_a_redone_input_supersedes_its_row_in_a_merged_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_index, "PART_ROWS", 30)  # the merged part is a full one
    out = tmp_path / "out"
    write_part(out, "compact-00000000-x.parquet", rows(0, 40, "t1"))
    write_part(out, "part-00000008-redo.parquet", rows(8, 9, "t2"))
    index = compact_index(str(out))
    assert len(index) == 40
    assert index.set_index("ordinal").loc[8, "colorized_at"] == "t2"
    old = storage.read_parquet(str(out / "index" / "compact-00000000-x.parquet"))
    assert len(old) == 39 and 8 not in set(old["ordinal"])  # rewritten without the old row
    assert parts(out) == ["compact-00000000-x.parquet", "part-00000008-redo.parquet"]


def test_planning_reads_only_its_columns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_part(out, "part-00000000-a.parquet", rows(0, 8, "t1"))
    index = compact_index(str(out), PLAN_COLUMNS)
    assert set(index.columns) <= set(PLAN_COLUMNS) | {"key"}
    assert "width" not in index and len(index) == 8
    assert read_index(str(out))["width"].tolist() == [64] * 8
