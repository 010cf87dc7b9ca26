"""`make demo`'s job on the bundled sample collection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from koala.demo import main


@pytest.mark.usefixtures("prefect_server")
def test_demo_builds_the_sample_dataset(tmp_path: Path) -> None:
    assert main(str(tmp_path)) == 0
    index = pd.read_parquet(tmp_path / "dataset" / "index.parquet")
    status = dict(zip(index["uri"].map(lambda u: Path(u).name), index["reason"], strict=True))
    assert status["astronaut.jpg"] is None and status["coffee.jpg"] is None
    assert status["scan_camera.png"] == "monochrome"
    assert status["sepia_camera.jpg"] == "monochrome"
    assert status["broken_download.jpg"] == "truncated"
    assert list((tmp_path / "dataset" / "shards").glob("*.tar"))
