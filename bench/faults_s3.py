"""colorize-archive on S3 that throttles and drops connections (issue 29): moto's S3 server
behind tests/fault_proxy.py, which answers a share of requests with 503 SlowDown, 500 or a
connection reset. Each repeat runs the same collection twice, fault-free and at ``--rate``
(alternating which goes first), into fresh outputs, and checks the faulty run against the
clean one: one row per input, the same statuses, byte-identical outputs.

    .venv/bin/python bench/faults_s3.py [--scans 200] [--rate 0.1] [--repeats 3]

Prints one JSON object last: seconds of each kind (median, min, max), the faults injected
(each one a retry by botocore) and the requests they were among.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import start_prefect_server


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def collection(bucket: str, scans: int) -> None:
    """``scans`` gray PNGs under ``bucket/in/``, in boxes of 50."""
    from koala import storage
    from tests.fixtures import colour_photo, encode

    fs, _ = storage.get_fs(bucket)
    for i in range(scans):
        image = colour_photo(1000 + i, (320, 240)).convert("L")
        fs.pipe(f"{bucket[5:]}/in/box{i // 50:02d}/scan{i:04d}.png", encode(image, "PNG"))


def check(bucket: str, clean: dict, faulty: dict, r: int, scans: int) -> None:
    from koala import storage

    index = storage.read_parquet(f"{bucket}/faulty{r}/index")
    assert len(index) == scans and index["input_uri"].is_unique, "rows lost or doubled"
    assert faulty["counts"] == clean["counts"], (faulty["counts"], clean["counts"])

    def images(out: str) -> dict[str, bytes]:
        found = storage.list_files(f"{bucket}/{out}/images", "*/*")
        return {u.split(f"/{out}/", 1)[1]: storage.read_bytes(u) for u in found}

    same = images(f"faulty{r}") == images(f"clean{r}")
    assert same, "an output differs from the fault-free run's"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    from infra.local_stack import free_port
    from tests.fault_proxy import FaultProxy

    home = Path(tempfile.mkdtemp(prefix="koala-faults-"))
    server, _ = start_prefect_server(home / "prefect")
    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1"
    )
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="archive")
    from flows.colorize import colorize_archive
    from koala import storage
    from koala.settings import get_settings

    def use(url: str) -> None:
        os.environ["KOALA_S3_ENDPOINT_URL"] = url
        get_settings.cache_clear()
        storage.configure_fsspec()

    times: dict[str, list[float]] = {"clean_s": [], "faulty_s": []}
    injected, requests = [], []
    try:
        with FaultProxy(endpoint, rate=args.rate, seed=29) as proxy:
            use(endpoint)
            collection("s3://archive", args.scans)
            for r in range(args.repeats):
                results = {}
                for kind in ("clean", "faulty") if r % 2 == 0 else ("faulty", "clean"):
                    use(proxy.url if kind == "faulty" else endpoint)
                    before = dict(proxy.counts)
                    t = time.perf_counter()
                    results[kind] = colorize_archive(
                        input="s3://archive/in", output=f"s3://archive/{kind}{r}"
                    )
                    times[f"{kind}_s"].append(time.perf_counter() - t)
                    if kind == "faulty":
                        injected.append(proxy.counts["faults"] - before.get("faults", 0))
                        requests.append(proxy.counts["requests"] - before.get("requests", 0))
                use(endpoint)
                check("s3://archive", results["clean"], results["faulty"], r, args.scans)
                last = {k: round(v[-1], 2) for k, v in times.items()}
                print(json.dumps({"repeat": r, **last, "faults": injected[-1]}), file=sys.stderr)
    finally:
        moto.stop()
        server.terminate()
    print(
        json.dumps(
            {
                "scans": args.scans,
                "fault_rate": args.rate,
                **{k: spread(v) for k, v in times.items()},
                "faults_injected": injected,
                "requests_through_proxy": requests,
                "checked": "one row per input, same statuses, byte-identical outputs",
            }
        )
    )


if __name__ == "__main__":
    main()
