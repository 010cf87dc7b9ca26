"""Time to a first result (issue 27): ``koala colorize`` as a newcomer runs it, whole command
(interpreter start to exit), on a fresh box of ~1-megapixel scans.

- ``one_scan_cold_s``: one gray scan, no Prefect server configured and no local stack up
  (the command starts a temporary server itself), a new output folder.
- ``nine_scans_cold_s``: the newcomer's box: 6 gray scans, 1 sepia print, 1 colour
  photograph, 1 truncated file; same conditions.
- ``one_scan_stack_s``: one scan with the local stack up (``python -m infra.local_stack up``
  in a private ``KOALA_STACK_DIR``), which the command finds and uses (its first run after
  ``up`` loads the model into the stack's worker; the spread shows it).
- ``failures``: the newcomer's mistakes (a non-image input, a file as output, a missing
  build-dataset source, a typo'd option, an unknown model, a box where every file is broken):
  exit code, seconds (median and spread) and the line the command ended with.

Each is run ``--repeats`` times (a new output each time, the OS file cache warm after the
first); the median and spread are reported. Targets: 10 s, 15 s and 4 s. The scans are
BSDS500 val photographs upscaled to 1224x816 when ``../shared/datasets/bsds500`` is there,
else the test fixtures' synthetic photographs. Last line: JSON.

    python bench/first_result.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
SIZE = (1224, 816)  # 1.0 megapixel
TARGETS = {"one_scan_cold_s": 10.0, "nine_scans_cold_s": 15.0, "one_scan_stack_s": 4.0}


def _photos(n: int) -> list[Image.Image]:
    """``n`` colour photographs at :data:`SIZE`."""
    bsds = REPO.parent / "shared" / "datasets" / "bsds500" / "val"
    files = sorted(bsds.glob("*.jpg"))[:n] if bsds.is_dir() else []
    if len(files) == n:
        return [Image.open(f).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS) for f in files]
    sys.path.insert(0, str(REPO))
    from tests.fixtures import colour_photo

    return [colour_photo(100 + i, SIZE).convert("RGB") for i in range(n)]


def make_boxes(root: Path) -> tuple[Path, Path]:
    """``root/one`` (one gray scan) and ``root/nine`` (the newcomer's box)."""
    photos = _photos(8)
    one, nine = root / "one", root / "nine"
    one.mkdir(parents=True)
    nine.mkdir()
    photos[0].convert("L").save(one / "scan.jpg", quality=92)
    for i, photo in enumerate(photos[:6]):
        photo.convert("L").save(nine / f"scan{i + 1:02d}.jpg", quality=92)
    sepia = ImageOps.colorize(photos[6].convert("L"), (40, 22, 8), (250, 236, 200))
    sepia.save(nine / "sepia_print.jpg", quality=92)
    photos[7].save(nine / "colour_photo.jpg", quality=92)
    whole = (nine / "scan01.jpg").read_bytes()
    (nine / "damaged.jpg").write_bytes(whole[: len(whole) // 3])
    return one, nine


def _env(stack_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "KOALA_DASK_ADDRESS")
    }
    return env | {"KOALA_STACK_DIR": str(stack_dir), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def time_colorize(box: Path, out: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds of one whole ``koala colorize`` command and its summary line."""
    cmd = [sys.executable, "-m", "cli", "colorize", "--input", str(box), "--output", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"colorize failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds, done.stdout.strip().splitlines()[-1]


def failure_cases(root: Path, box: Path) -> dict[str, list[str]]:
    """The newcomer's mistakes of issue 27, each as a ``koala`` argument list."""
    root.mkdir(parents=True)
    (root / "notes.pdf").write_bytes(b"%PDF-1.7\n" + bytes(2048))
    (root / "taken.txt").write_text("a file")
    broken = root / "all-broken"
    broken.mkdir()
    whole = next(box.glob("scan01.jpg")).read_bytes()
    (broken / "damaged.jpg").write_bytes(whole[: len(whole) // 3])
    out = str(root / "out-failures")
    return {
        "non-image --input": ["colorize", "--input", str(root / "notes.pdf"), "--output", out],
        "existing file as --output": ["colorize", "--input", str(box), "--output",
                                      str(root / "taken.txt")],
        "build-dataset, missing source": ["build-dataset", "--source", "/missing/scans",
                                          "--out", str(root / "ds")],
        "typo'd option": ["colorize", "--input", str(box), "--output", out, "--saturaton", "1.4"],
        "unknown model": ["colorize", "--input", str(box), "--output", out, "--model",
                          "chroma_unnet"],
        "every input failed": ["colorize", "--input", str(broken), "--output",
                               str(root / "out-broken")],
    }  # fmt: skip


def time_failure(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Seconds, exit code and last stderr line of one failing ``koala`` command."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    return seconds, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def _stats(runs: list[float]) -> dict:
    return {
        "median": round(statistics.median(runs), 2),
        "min": round(min(runs), 2),
        "max": round(max(runs), 2),
        "runs": [round(r, 2) for r in runs],
    }


def _stack(command: str, env: dict[str, str]) -> None:
    args = [sys.executable, "-m", "infra.local_stack", command]
    subprocess.run(args, env=env, cwd=REPO, check=True, capture_output=True, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="koala-first-") as tmp:
        root = Path(tmp)
        one, nine = make_boxes(root / "boxes")
        env = _env(root / "stack")
        runs: dict[str, list[float]] = {k: [] for k in TARGETS}
        lines = {}
        for i in range(args.repeats):  # the cold cases alternate, each with a new output
            for key, box in (("one_scan_cold_s", one), ("nine_scans_cold_s", nine)):
                seconds, lines[key] = time_colorize(box, root / f"out-{key}-{i}", env)
                runs[key].append(seconds)
                print(f"{key} run {i + 1}: {seconds:.2f} s ({lines[key]})", flush=True)
        failures = {}
        cases = [failure_cases(root / f"mistakes-{i}", nine) for i in range(args.repeats)]
        for name in cases[0]:  # each repeat in fresh folders: a rerun would find work done
            tried = [time_failure(case[name], env) for case in cases]
            seconds = [t[0] for t in tried]
            failures[name] = {"seconds": _stats(seconds), "exit": tried[0][1], "line": tried[0][2]}
            print(f"{name}: exit {tried[0][1]}, {statistics.median(seconds):.2f} s", flush=True)
        _stack("up", env)
        try:
            for i in range(args.repeats):
                seconds, lines["one_scan_stack_s"] = time_colorize(one, root / f"out-s{i}", env)
                runs["one_scan_stack_s"].append(seconds)
                print(f"one_scan_stack_s run {i + 1}: {seconds:.2f} s", flush=True)
        finally:
            _stack("down", env)
    result = {k: _stats(v)["median"] for k, v in runs.items()}
    result |= {f"{k}_spread": _stats(v) for k, v in runs.items()}
    result |= {"targets": TARGETS, "summaries": lines, "repeats": args.repeats}
    result["failures"] = failures
    result["cpu"] = _cpu()
    print(json.dumps(result))


def _cpu() -> str:
    try:
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        return f"{names[0].split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except (OSError, IndexError):
        return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
