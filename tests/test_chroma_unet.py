"""The flagship's colour machinery: edge-aware (guided) upsampling of a*b*, the per-image
confidence from the predicted colour distribution, and the prior correction that calibration
fits instead of a chroma gain."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from koala.colour import colorize_lightness, merge_full_resolution
from models.calibration import (
    colourfulness_ratio,
    fit_prior_correction,
    predict_with_confidence,
)
from models.chroma_unet import confidence_map, guided_upsample
from models.registry import build_model


def _step_scene(size: int) -> np.ndarray:
    """L*: a bright sky (left) against a dark head (right), edge at 60% of the width."""
    light = np.full((size, size), 80.0, np.float32)
    light[:, int(size * 0.6) :] = 30.0
    return light


def _blurred_ab(view: int, width: float = 1.0) -> np.ndarray:
    """a*b* as a low-resolution prediction has it: blue sky, warm head, a soft transition
    ``width`` pixels wide across the edge."""
    x = np.arange(view, dtype=np.float32) + 0.5
    t = np.clip((x - view * 0.6) / width + 0.5, 0, 1)
    ab = np.empty((2, view, view), np.float32)
    ab[0] = (1 - t) * -5 + t * 20  # a*: sky slightly green-blue, skin red
    ab[1] = (1 - t) * -30 + t * 25  # b*: sky blue, skin yellow
    return ab


def test_guided_upsampling_stops_colour_at_the_edge() -> None:
    """Bilinear upsampling paints the sky orange next to the head (a halo); guided by the
    scan's own L*, the sky keeps its blue up to the edge."""
    view, full = 50, 500
    ab_view = _blurred_ab(view)
    light_full = _step_scene(full)
    light_view = _step_scene(view)
    lab = np.stack([light_full, light_full * 0, light_full * 0], -1)
    plain = merge_full_resolution(lab, ab_view, (0, 0, view, view))
    guided = merge_full_resolution(lab, ab_view, (0, 0, view, view), light_view=light_view)
    edge = int(full * 0.6)
    sky, head = slice(edge - 30, edge), slice(edge, edge + 30)  # 30 pixels either side
    assert plain[:, sky, 2].max() > -10  # bilinear: the sky turns yellow next to the head
    assert guided[:, sky, 2].max() < -20  # guided: it stays blue up to the edge
    for side, truth in ((sky, -30.0), (head, 25.0)):
        halo = [np.abs(x[:, side, 2] - truth).mean() for x in (plain, guided)]
        assert halo[1] < 0.5 * halo[0], halo
    strips = colorize_lightness(light_full, ab_view, (0, 0, view, view), light_view=light_view)
    from koala.colour import lab_to_rgb

    reference = lab_to_rgb(guided)
    assert np.abs(strips.astype(int) - reference.astype(int)).max() <= 2


def test_model_level_guided_upsampling_follows_light() -> None:
    light = torch.from_numpy(_step_scene(64) / 100.0)[None, None]
    ab_low = torch.from_numpy(_blurred_ab(16) / 128.0)[None]
    out = guided_upsample(light, ab_low, radius=1, eps=1e-3)
    assert out.shape == (1, 2, 64, 64)
    assert float(out[0, 1, :, 30:37].max()) < -0.15  # sky side near the edge stays blue
    assert float(out[0, 1, :, 40:45].min()) > 0.1


def test_confidence_is_high_for_a_peaked_distribution_and_low_for_a_flat_one() -> None:
    peaked = torch.full((1, 261, 4, 4), -20.0)
    peaked[:, 7] = 20.0
    flat = torch.zeros(1, 261, 4, 4)
    assert float(confidence_map(peaked).min()) > 0.99
    assert float(confidence_map(flat).max()) < 1e-5
    model = build_model("chroma_unet", pretrained=False).eval()
    light, emb = torch.rand(2, 1, 64, 64), torch.randn(2, 1280)
    with torch.no_grad():
        ab, scores = predict_with_confidence(model, light, emb, [(0, 0, 64, 64), (8, 0, 56, 64)])
    assert ab.shape == (2, 2, 64, 64) and len(scores) == 2
    assert all(0.0 <= s <= 1.0 for s in scores)
    plain = build_model("regression").eval()
    with torch.no_grad():
        _, none = predict_with_confidence(plain, light, emb, [(0, 0, 64, 64)] * 2)
    assert none == [None, None]


def test_prior_correction_reaches_the_colour_target() -> None:
    """A model unsure between a vivid red and the common near-neutral colours decodes washed
    out; taking alpha * log(prior) from its logits lets the red through. The fit finds the
    smallest alpha that reaches the target (no gain), and colour grows with alpha."""
    torch.manual_seed(0)
    model = build_model("chroma_unet", pretrained=False).eval()
    c = model.centres
    prior = torch.softmax(-(c**2).sum(1) / (2 * 12.0**2), 0)  # training colours: near neutral
    red = -((c - torch.tensor([45.0, 20.0])) ** 2).sum(1) / (2 * 15.0**2)
    with torch.no_grad():
        model.log_prior.copy_(prior.log())
        model.classify.weight.mul_(0.0)
        model.classify.bias.copy_(prior.log() + red)  # the evidence is weak against the prior
    size = 48
    light = torch.rand(4, 1, size, size) * 0.6 + 0.2
    ab = torch.zeros(4, 2, size, size)
    ab[:, 0], ab[:, 1] = 45 / 128, 20 / 128  # the truth is that red
    batch = {
        "light": light,
        "ab": ab,
        "embedding": torch.randn(4, 1280),
        "box": torch.tensor([[0, 0, size, size]] * 4),
    }
    alpha, before, after = fit_prior_correction(model, [batch], torch.device("cpu"), 0.8)
    assert 0.0 < alpha <= 2.0 and before < 0.8 <= after
    lum = light[0, 0].numpy()
    with torch.no_grad():
        logits = model.logits(light[:1], batch["embedding"][:1])
        ratios = [
            colourfulness_ratio(
                [(lum, model.decode(logits, light[:1], a)[0].numpy() * 128, ab[0].numpy() * 128)],
                1.0,
            )
            for a in (0.0, 0.5, 1.0)
        ]
    assert ratios[0] < ratios[1] < ratios[2]


def test_index_has_confidence_and_the_sheet_shows_the_least_confident_first(tmp_path) -> None:
    """Colorize with the flagship architecture: every ok row carries a confidence in [0, 1];
    the contact sheet's review section lists results lowest confidence first, with
    thumbnails made from the outputs even for inputs outside the sampled ones."""
    from models.registry import save_model
    from tasks.archive_index import read_index
    from tasks.colorize import ColorizeConfig, colorize_batch, prepare_run
    from tasks.contact_sheet import write_contact_sheet
    from tests.fixtures import colour_photo, encode

    registry = str(tmp_path / "registry")
    torch.manual_seed(0)
    model = build_model("chroma_unet", pretrained=False)
    save_model(registry, "chroma_unet", model, {"backbone": "efficientnet-lite0"})
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(3):
        gray = colour_photo(700 + i, (140 + 20 * i, 100)).convert("L")
        (scans / f"s{i}.png").write_bytes(encode(gray, "PNG"))
    out = tmp_path / "out"
    cfg = ColorizeConfig(registry, "chroma_unet", str(out), "png")
    refs, plan, _, _ = prepare_run(str(scans), cfg)
    assert colorize_batch(refs, plan, cfg)["counts"] == {"ok": 3}
    index = read_index(str(out))
    assert index["confidence"].between(0.0, 1.0).all()
    for thumb in (out / "contact").glob("*"):
        thumb.unlink()  # as if these inputs were beyond the sampled first ones
    html = Path(write_contact_sheet(str(out), index, "chroma_unet")).read_text()
    review = html.split("Review first", 1)[1].split("Before and after", 1)[0]
    shown = [float(x) for x in re.findall(r"confidence (\d\.\d\d)", review)]
    assert len(shown) == 3 and shown == sorted(shown), shown
    assert len(list((out / "contact").glob("*-after.jpg"))) == 3


def test_lite_decoder_is_separable_where_the_grid_is_large_and_classic_loads_as_shipped() -> None:
    from models.chroma_unet import SeparableUpBlock
    from models.unet import UpBlock

    lite = build_model("chroma_unet", pretrained=False)
    classic = build_model("chroma_unet", pretrained=False, decoder="classic")
    assert [type(u) for u in lite.ups] == [UpBlock, SeparableUpBlock, SeparableUpBlock]
    assert all(type(u) is UpBlock for u in classic.ups)
    count = lambda m: sum(p.numel() for p in m.ups.parameters())  # noqa: E731
    assert count(lite) < 0.6 * count(classic)
    light, emb = torch.rand(2, 1, 64, 64), torch.randn(2, 1280)
    assert lite.logits(light, emb).shape == classic.logits(light, emb).shape


def test_adversarial_step_trains_the_discriminator_and_the_network() -> None:
    torch.manual_seed(0)
    model = build_model("chroma_unet", pretrained=False, adversarial_weight=0.5).train()
    opts = model.optimizers(1e-3, 0.0)
    assert set(opts) == {"model", "discriminator"}
    in_model = {id(p) for g in opts["model"].param_groups for p in g["params"]}
    assert not any(id(p) in in_model for p in model.discriminator.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    light = torch.rand(2, 1, 64, 64)
    ab, mask = torch.rand(2, 2, 64, 64) * 0.4 - 0.2, torch.ones(2, 1, 64, 64)
    losses = model.train_step(light, torch.randn(2, 1280), ab, mask, opts)
    assert {"loss", "ce", "g_adversarial", "d_loss"} <= set(losses)
    after = model.state_dict()
    changed = lambda prefix: any(  # noqa: E731
        not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)
    )
    assert changed("discriminator.") and changed("classify.") and changed("ups.")
    model.eval()
    with torch.no_grad():
        assert model(light, torch.randn(2, 1280)).shape == (2, 2, 64, 64)  # D never runs here


def test_sparse_soft_targets_match_the_dense_encoding() -> None:
    """The candidate table's sparse targets give the dense soft encoding's nearest bin on
    every pixel and its weights to within near-ties of the fifth neighbour."""
    from models import ab_bins

    torch.manual_seed(1)
    model = build_model("chroma_unet", pretrained=False)
    ab = (torch.rand(6, 2, 24, 24) - 0.5) * 200
    ab[:3] *= 0.15  # near-neutral pixels, where most of a photograph is
    dense = ab_bins.soft_encode(ab, model.centres, 5, 5.0)
    idx, weights = ab_bins.soft_targets(ab, model.centres, model._candidates(), 5, 5.0)
    assert idx.shape == weights.shape == (6, 5, 24, 24)
    assert torch.equal(dense.argmax(1), idx[:, 0])
    sparse = torch.zeros_like(dense).scatter_(1, idx, weights)
    off = (sparse - dense).abs().amax(1)
    assert off.max() < 0.02 and (off > 1e-4).float().mean() < 0.01
