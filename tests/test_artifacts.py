"""The artifacts every flow leaves on its run, read back from a real Prefect server: the
helpers inside a tiny flow, and colorize-archive on three small scans with the shipped model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows.artifacts import link_url, publish_counts, publish_decision, publish_link
from tests.fixtures import colour_photo, encode


def artifacts_of(run_id: UUID, *keys: str) -> dict[str, object]:
    """The artifacts with ``keys`` of flow run ``run_id``, as the Prefect API returns them."""
    only = ArtifactFilter(
        key=ArtifactFilterKey(any_=list(keys)), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
    )
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=only)
    assert len(found) == len(keys), [a.key for a in found]  # one of each, none missing
    return {a.key: a for a in found}


def table(artifact) -> list[dict]:
    assert artifact.type == "table"
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_link_url_makes_local_paths_file_urls_and_keeps_remote_ones(tmp_path: Path) -> None:
    assert link_url(str(tmp_path / "a b" / "index.html")) == (tmp_path / "a b/index.html").as_uri()
    assert link_url("out/sheet.html") == (Path.cwd() / "out/sheet.html").as_uri()
    assert link_url("file:///x/y.html") == "file:///x/y.html"
    for remote in ("s3://bucket/reports/latest/index.html", "https://example.org/r.html"):
        assert link_url(remote) == remote


def test_helpers_attach_tables_and_links_to_the_run(prefect_server: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]  # the session's server is shared: keys of this test only

    @flow
    def tiny() -> None:
        publish_counts(f"counts-{suffix}", {"ok": 2, "failed": 1}, "2 of 3", label="status")
        publish_link(f"link-{suffix}", str(tmp_path / "sheet.html"), "contact sheet")
        decision = {
            "challenger": "unet@v2",
            "champion": "unet@v1",
            "metric": "psnr",
            "challenger_score": 24.123456,
            "champion_score": 23.5,
            "improvement": 0.623456,
            "margin": 0.05,
            "promoted": True,
        }
        publish_decision(decision, "s3://bucket/data/reports/nightly-v2/index.html", ["in/"])

    state = tiny(return_state=True)
    keys = (
        f"counts-{suffix}",
        f"link-{suffix}",
        "nightly-retrain-decision",
        "nightly-retrain-report",
    )
    found = artifacts_of(state.state_details.flow_run_id, *keys)
    counts = found[f"counts-{suffix}"]
    assert table(counts) == [{"status": "ok", "count": 2}, {"status": "failed", "count": 1}]
    assert counts.description == "2 of 3"
    link = found[f"link-{suffix}"]
    assert link.data == f"[contact sheet]({(tmp_path / 'sheet.html').as_uri()})"
    (row,) = table(found["nightly-retrain-decision"])
    assert row["promoted"] is True and row["challenger_score"] == 24.1235
    assert "promoted the challenger" in found["nightly-retrain-decision"].description
    report = found["nightly-retrain-report"].data
    assert report == "[evaluation report](s3://bucket/data/reports/nightly-v2/index.html)"


def test_a_bad_key_is_refused_by_prefect(prefect_server: str) -> None:
    @flow
    def bad() -> None:
        publish_counts("Colorize_Counts", {"ok": 1}, "x")

    with pytest.raises(ValueError, match="Artifact key"):
        bad()


def test_colorize_run_shows_its_counts_and_contact_sheet(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.colorize import colorize_archive
    from koala.settings import get_settings

    monkeypatch.setenv("KOALA_DATA_ROOT", str(tmp_path / "no-registry"))  # the shipped model
    get_settings.cache_clear()
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(2):
        (archive / f"scan{i}.png").write_bytes(encode(colour_photo(40 + i).convert("L"), "PNG"))
    (archive / "colour.jpg").write_bytes(encode(colour_photo(50)))
    out = tmp_path / "out"
    state = colorize_archive(input=str(archive), output=str(out), return_state=True)
    get_settings.cache_clear()
    result = state.result()
    keys = ("colorize-archive-counts", "colorize-archive-contact-sheet", "colorize-progress")
    found = artifacts_of(state.state_details.flow_run_id, *keys)
    counts = {r["status"]: r["count"] for r in table(found["colorize-archive-counts"])}
    assert counts == {
        "ok": 2,
        "skipped_color": 1,
        "total": 3,
        "new (colorized or retried this run)": 3,
    }
    assert result["model"] in found["colorize-archive-counts"].description
    sheet = found["colorize-archive-contact-sheet"].data
    assert sheet == f"[contact sheet]({(out / 'contact_sheet.html').resolve().as_uri()})"
    assert (out / "contact_sheet.html").exists()
    assert found["colorize-progress"].type == "progress"  # flows/progress.py's, same run
