"""The hint-taking flagship (Zhang et al. 2017's hints as input): started from a model without
hints it predicts exactly as that model did, training samples hints from the truth, and the
hints' inputs learn."""

from __future__ import annotations

import torch

from models.chroma_unet import ChromaUNet, ChromaUNetConfig, hint_maps, sample_hints
from models.registry import build_model, options_for

SIZE = 64


def models_pair(**extra) -> tuple[ChromaUNet, ChromaUNet]:
    torch.manual_seed(0)
    plain = build_model("chroma_unet", **options_for("chroma_unet", {"pretrained": False}))
    options = {"pretrained": False, "hints": True, **extra}
    hinted = build_model("chroma_unet", **options_for("chroma_unet", options))
    hinted.load_state_dict(plain.state_dict())  # the hint inputs start at zero
    return plain.eval(), hinted.eval()


def test_a_hint_model_started_from_a_plain_one_predicts_as_it_did() -> None:
    plain, hinted = models_pair()
    light = torch.rand(2, 1, SIZE, SIZE)
    embedding = torch.randn(2, plain.config.embedding_dim)
    maps = hint_maps([[(10, 10, 20, 20)], []], [[(60.0, -40.0)], []], SIZE)
    with torch.no_grad():
        before = plain(light, embedding)
        assert torch.equal(hinted(light, embedding), before)
        assert torch.allclose(hinted(light, embedding, maps), before, atol=1e-6)
        with torch.no_grad():
            hinted.hint_inputs[-1].project[-1].weight.normal_()
        assert not torch.allclose(hinted(light, embedding, maps), before, atol=1e-3)
        assert torch.equal(plain(light, embedding), before)


def test_training_hints_come_from_the_truth_on_real_pixels() -> None:
    gen = torch.Generator().manual_seed(1)
    ab = torch.zeros(8, 2, SIZE, SIZE)
    ab[:, 0], ab[:, 1] = 0.3, -0.2  # one colour per image: every hint must carry it
    mask = torch.zeros(8, 1, SIZE, SIZE)
    mask[..., 16:48, 16:48] = 1.0
    maps = sample_hints(ab, mask, free=0.0, p=0.5, generator=gen)
    hinted = maps[:, 2] > 0
    assert hinted.flatten(1).any(1).all()  # every image got hints
    assert torch.allclose(maps[:, 0][hinted], torch.tensor(0.3))
    assert torch.allclose(maps[:, 1][hinted], torch.tensor(-0.2))
    near = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    near[14:50, 14:50] = True  # a hint's square reaches at most 2 pixels past a real one
    assert not (hinted & ~near).any()
    none = sample_hints(ab, mask, free=1.0, p=0.5, generator=gen)
    assert not none.any()  # the hint-free share: the automatic model


def test_the_hint_inputs_learn_in_training() -> None:
    _, model = models_pair(hint_free=0.0)  # every sample hinted in this step
    model.train()
    light = torch.rand(4, 1, SIZE, SIZE)
    embedding = torch.randn(4, model.config.embedding_dim)
    ab = torch.rand(4, 2, SIZE, SIZE) - 0.5
    mask = torch.ones(4, 1, SIZE, SIZE)
    opts = model.optimizers(1e-3, 0.0)
    torch.manual_seed(3)
    last = model.hint_inputs[-1].project[-1].weight
    assert not last.any()
    model.train_step(light, embedding, ab, mask, opts)
    assert last.any()  # the zero-initialised projection moved
    assert ChromaUNetConfig().hints is False  # the shipped design takes no hints by default


def test_without_hints_a_trained_hint_model_is_its_automatic_model() -> None:
    plain, model = models_pair()
    with torch.no_grad():  # hint inputs as training might leave them
        for hint_input in model.hint_inputs:
            for layer in (hint_input.project[0], hint_input.project[-1]):
                layer.weight.normal_()
    light = torch.rand(2, 1, SIZE, SIZE)
    embedding = torch.randn(2, model.config.embedding_dim)
    empty = hint_maps([[], []], [[], []], SIZE)
    with torch.no_grad():
        before = plain(light, embedding)
        assert torch.equal(model(light, embedding), before)
        assert torch.equal(model(light, embedding, empty), before)


def test_hints_only_trains_the_hint_inputs_alone() -> None:
    plain, model = models_pair(hint_free=0.0, hints_only=True, finetune_after=0)
    model.train()
    model.set_encoder_trainable(True)  # what fine-tuning would do: still nothing of the encoder
    opts = model.optimizers(1e-3, 0.0)
    light = torch.rand(4, 1, SIZE, SIZE)
    embedding = torch.randn(4, model.config.embedding_dim)
    ab, mask = torch.rand(4, 2, SIZE, SIZE) - 0.5, torch.ones(4, 1, SIZE, SIZE)
    model.train_step(light, embedding, ab, mask, opts)
    model.fit_prior([{"ab": ab, "box": torch.tensor([[0, 0, SIZE, SIZE]] * 4)}])
    before, after = plain.state_dict(), model.state_dict()
    moved = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("hint_inputs.") for k in moved)
    assert any(model.hint_inputs[-1].project[-1].weight.flatten() != 0)
