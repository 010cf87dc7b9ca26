"""Planning a rerun at archive scale (issue 29): a synthetic collection of N inputs and an index
holding a row for every one of them, as a finished run leaves it; no image files.

For each size, a fresh process lists the inputs (synthetic ``InputRef`` s, as a folder listing
gives them), plans the rerun exactly as ``koala colorize`` does (``plan_listed`` then
``plan_batches``: compaction, names, what is done) and sums up as it does when there is nothing
to do (``rerun_s``: the listing, the plan, and the run's end as the flow makes it: the index
compacted and read whole, the contact sheet of all the rows, the summary). It reports each
step's seconds and its own peak RSS after the listing, the plan and all. A second part makes
50 small runs into one output (two index parts each, as two batches of 8 write them, with the
flow's compaction at each run's start and end) and times reading the index after the first
run and after the fiftieth, against the same rows uncompacted (a part per batch) and written
at once (one part).

    .venv/bin/python bench/scale.py [--sizes 10000 100000 1000000] [--repeats 3] [--runs 50]

Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from koala import storage
from koala.sources import InputRef, uri_key
from tasks.archive_index import INDEX_COLUMNS, INDEX_DTYPES, INDEX_SCHEMA, index_dir

SOURCE = "/archive/collection"
MODEL, VERSION = "chroma_unet", "20261202T173843544Z-9701e3"
#: rows per index part the synthetic index is written in (what compaction leaves)
PART_ROWS = 100_000


def input_uri(i: int) -> str:
    return f"{SOURCE}/box-{i // 1000:04d}/scan-{i:07d}.tif"


def stamp(i: int) -> str:
    return f"{1_000_000 + i * 7}-{1_700_000_000 + i}"


def listing(n: int) -> list[InputRef]:
    """What listing a folder of ``n`` scans gives (keys, ordinals, stamps)."""
    return [
        InputRef(key=uri_key(u), ordinal=i, uri=u, source=SOURCE, stamp=stamp(i))
        for i, u in ((i, input_uri(i)) for i in range(n))
    ]


def index_rows(start: int, stop: int, output: str, at: str) -> pd.DataFrame:
    """The rows a colorize run writes for inputs ``start..stop``: most colorized, some
    skipped as colour, a few failed."""
    rows = []
    for i in range(start, stop):
        uri = input_uri(i)
        status = "failed" if i % 97 == 0 else "skipped_color" if i % 41 == 0 else "ok"
        rows.append(
            {
                "input_uri": uri,
                "input_sha256": f"{i:064x}",
                "output_uri": None
                if status != "ok"
                else f"{output}/images/box-{i // 1000:04d}/scan-{i:07d}.jpg",
                "status": status,
                "reason": "corrupt: cannot identify image file" if status == "failed" else None,
                "width": 3000,
                "height": 2000,
                "input_mode": "L",
                "bit_depth": 8,
                "model": MODEL,
                "model_version": VERSION,
                "weights_sha256": "ab" * 32,
                "seconds": 1.5,
                "note": None,
                "key": uri_key(uri),
                "ordinal": i,
                "colour_score": 0.01,
                "colour_evidence": "gray",
                "colour_uncertain": False,
                "confidence": 0.8,
                "treated_as": "monochrome",
                "saturation": 1.0,
                "input_stamp": stamp(i),
                "colorized_at": at,
            }
        )
    return pd.DataFrame(rows, columns=INDEX_COLUMNS).astype(INDEX_DTYPES)


def make_index(n: int, output: str) -> None:
    """An output whose index holds a row for each of ``n`` inputs, in parts of PART_ROWS."""
    for start in range(0, n, PART_ROWS):
        frame = index_rows(start, min(n, start + PART_ROWS), output, "2026-12-01T00:00:00Z")
        part = storage.join(index_dir(output), f"compact-{start:08d}.parquet")
        storage.write_parquet(part, frame, INDEX_SCHEMA)


def peak_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plan_once(n: int, output: str) -> dict:
    """One rerun with nothing to do, timed step by step (run in a fresh process), as
    ``colorize-archive`` makes it: the listing, the plan, then the run's end (the index
    compacted and read whole, the contact sheet of all the run's rows, the summary)."""
    from dataclasses import replace

    from models.cards import find_card
    from tasks.colorize_plan import plan_batches, plan_listed, resolve_registry
    from tasks.config import ColorizeConfig
    from tasks.run_end import finish_run

    cfg = ColorizeConfig(model=MODEL, output=output, registry=resolve_registry(None))
    card = find_card(cfg.registry, f"{MODEL}@{VERSION}")
    cfg = replace(cfg, model=f"{MODEL}@{VERSION}")
    times = {}
    t0 = time.perf_counter()
    refs = listing(n)
    times["listing_s"] = time.perf_counter() - t0
    times["listing_peak_mb"] = peak_mb()
    t = time.perf_counter()
    plan, index = plan_listed(refs, cfg, card)
    todo = plan_batches(refs, plan, index, card, cfg)
    times["plan_s"] = time.perf_counter() - t
    times["plan_peak_mb"] = peak_mb()
    assert not todo, f"{sum(map(len, todo))} inputs planned: the index should hold them all"
    del index  # as the flow does before the run's end
    t = time.perf_counter()
    summary = finish_run(cfg, refs, card, SOURCE, 0)
    times["end_s"] = time.perf_counter() - t
    times["rerun_s"] = time.perf_counter() - t0  # what `koala colorize` does with nothing to do
    times["peak_mb"] = peak_mb()
    assert summary["inputs"] == n, f"the summary counts {summary['inputs']} inputs, not {n}"
    return times


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def scale(sizes: list[int], repeats: int, work: Path) -> dict:
    out = {}
    for n in sizes:
        output = str(work / f"out-{n}")
        make_index(n, output)
        runs = [child(["--plan", str(n), output]) for _ in range(repeats)]
        out[str(n)] = {k: spread([r[k] for r in runs]) for k in runs[0]}
        out[str(n)]["index_parts"] = len(storage.list_files(index_dir(output), "*.parquet"))
        print(json.dumps({n: out[str(n)]}), file=sys.stderr)
    return out


def small_runs(runs: int, work: Path, reads: int = 5) -> dict:
    """``runs`` runs of 16 new scans each (two parts of 8, compaction at start and end): the
    index read after the first and the last, and the same rows uncompacted and in one part."""
    from tasks.archive_index import compact_index

    output = str(work / "small-runs")
    after: dict[int, dict] = {}
    for r in range(runs):
        compact_index(output)
        for b in range(2):
            start = (2 * r + b) * 8
            frame = index_rows(start, start + 8, output, f"2026-12-{1 + r // 24:02d}T{r % 24:02d}")
            part = storage.join(index_dir(output), f"part-{start:08d}-run{r:03d}.parquet")
            storage.write_parquet(part, frame, INDEX_SCHEMA)
        compact_index(output)
        if r + 1 in (1, runs):
            after[r + 1] = timed_read(output, reads)
    # the same rows without compaction (a part per batch), and written at once (one part)
    loose, whole = str(work / "small-runs-loose"), str(work / "small-runs-whole")
    for start in range(0, 16 * runs, 8):
        part = storage.join(index_dir(loose), f"part-{start:08d}.parquet")
        storage.write_parquet(part, index_rows(start, start + 8, loose, "t"), INDEX_SCHEMA)
    part = storage.join(index_dir(whole), "part-00000000.parquet")
    storage.write_parquet(part, index_rows(0, 16 * runs, whole, "t"), INDEX_SCHEMA)
    after["uncompacted"] = timed_read(loose, reads)
    after["written_at_once"] = timed_read(whole, reads)
    return after


def timed_read(output: str, reads: int) -> dict:
    """Seconds to read the index of ``output`` (``reads`` times), its rows and parts."""
    from tasks.archive_index import read_index

    times = []
    for _ in range(reads):
        t = time.perf_counter()
        rows = len(read_index(output))
        times.append(time.perf_counter() - t)
    parts = len(storage.list_files(index_dir(output), "*.parquet"))
    return {"read_s": spread(times), "rows": rows, "parts": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--plan", nargs=2, metavar=("N", "OUTPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plan:
        print(json.dumps(plan_once(int(args.plan[0]), args.plan[1])))
        return
    with tempfile.TemporaryDirectory(prefix="koala-scale-") as tmp:
        result = {
            "sizes": scale(args.sizes, args.repeats, Path(tmp)),
            "small_runs": small_runs(args.runs, Path(tmp)),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
