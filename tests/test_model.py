"""UNet shapes, baal's MC-dropout patch, Dice and the soft-Dice loss."""

from __future__ import annotations

import pytest
import torch
from baal.bayesian.dropout import Dropout2d as MCDropout2d
from torch import nn

from models import UNet, mc_dropout_copy
from utils.loop.metrics import dice_score, soft_dice_loss


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (130, 97)])
def test_unet_accepts_any_size(size: tuple[int, int]) -> None:
    model = UNet(base_width=4).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 2, *size)


def test_unet_has_dropout_after_every_block() -> None:
    model = UNet(base_width=4, depth=5, dropout=0.3)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert len(dropouts) == 6 + 5  # six encoder blocks (five stride-2 levels), five decoders
    assert all(d.p == 0.3 for d in dropouts)


def test_mc_dropout_copy_keeps_dropout_on_in_eval() -> None:
    torch.manual_seed(0)
    model = UNet(base_width=4).eval()
    mc_model = mc_dropout_copy(model)
    assert not any(type(m) in (nn.Dropout, nn.Dropout2d) for m in mc_model.modules())
    assert any(isinstance(m, MCDropout2d) for m in mc_model.modules())
    assert not mc_model.training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(mc_model(x), mc_model(x))  # stochastic passes
        assert torch.equal(model(x), model(x))  # the original stays deterministic


def test_mc_model_uses_batchnorm_running_statistics() -> None:
    torch.manual_seed(0)
    mc_model = mc_dropout_copy(UNet(base_width=4, dropout=0.0))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        together = mc_model(x)
        alone = mc_model(x[:1])
    # With batch statistics the first image's output would depend on the other two.
    torch.testing.assert_close(together[:1], alone)


def test_dice_score_hand_computed() -> None:
    prediction = torch.tensor([[1, 1, 0], [0, 1, 0]])
    target = torch.tensor([[1, 0, 0], [0, 1, 1]])
    assert dice_score(prediction, target) == pytest.approx(2 * 2 / (3 + 3))
    assert dice_score(torch.zeros(2, 2), torch.zeros(2, 2)) == 1.0
    assert dice_score(torch.ones(2, 2), torch.zeros(2, 2)) == 0.0


def test_soft_dice_loss_golden_values() -> None:
    target = torch.tensor([[[0, 1], [1, 1]]])  # [1, 2, 2]
    perfect = torch.where(
        torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2) > 0, 50.0, -50.0
    )
    assert soft_dice_loss(perfect, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere
    # class 0: 2*0.5/(2+1) = 1/3; class 1: 2*1.5/(2+3) = 3/5; loss = 1 - (1/3 + 3/5)/2
    expected = 1 - (1 / 3 + 3 / 5) / 2
    assert soft_dice_loss(uniform, target, eps=0.0).item() == pytest.approx(expected)


def test_soft_dice_loss_sums_over_the_batch_and_the_per_image_loss_does_not() -> None:
    from utils.loop.metrics import soft_dice_loss_per_image

    uniform = torch.zeros(2, 2, 1, 1)  # p = 0.5 everywhere
    target = torch.tensor([[[0]], [[1]]])  # one pixel of class 0, one of class 1
    # Over the batch, each class: 2*0.5 / (1 + 1) = 1/2. Per image, the present class scores
    # 2*0.5 / (0.5 + 1) = 2/3 and the absent one 0: loss 1 - 1/3 each.
    assert soft_dice_loss(uniform, target, eps=0.0).item() == pytest.approx(0.5)
    per_image = soft_dice_loss_per_image(uniform, target, eps=0.0)
    torch.testing.assert_close(per_image, torch.tensor([2 / 3, 2 / 3]))
    for i in range(2):
        alone = soft_dice_loss(uniform[i : i + 1], target[i : i + 1], eps=0.0)
        torch.testing.assert_close(per_image[i], alone)


def test_mc_probabilities_match_sequential_passes() -> None:
    from utils.loop.inference import MCSettings, mc_mean_probabilities, mc_probabilities

    torch.manual_seed(0)
    mc_model = mc_dropout_copy(UNet(base_width=4))
    image = torch.rand(3, 40, 50)
    settings = MCSettings(5, 1, torch.device("cpu"), amp_dtype=None, channels_last=False)
    torch.manual_seed(1)
    probs = mc_probabilities(mc_model, image, settings)  # [1, C, H, W, T]
    torch.manual_seed(1)
    with torch.no_grad():
        expected = torch.stack([mc_model(image[None]).softmax(1) for _ in range(5)], dim=-1)
    assert probs.shape == (1, 2, 40, 50, 5)
    torch.testing.assert_close(probs, expected)
    torch.manual_seed(1)
    mean = mc_mean_probabilities(mc_model, image, settings)  # [C, H, W]
    torch.testing.assert_close(mean, expected[0].mean(-1))
    stacked = mc_probabilities(mc_model, image, MCSettings(5, 3, torch.device("cpu")))
    assert stacked.shape == (1, 2, 40, 50, 5)
    torch.testing.assert_close(stacked.sum(1), torch.ones(1, 40, 50, 5))
    # Samples stacked in one pass draw their own dropout masks, not one shared mask.
    for t in (1, 2):
        assert not torch.allclose(stacked[..., 0], stacked[..., t])


def test_batched_validation_equals_the_per_image_loss(synthetic_root) -> None:
    from data.glas import GlasDataset, ImageStore, read_split
    from utils.loop.training import validation_loss, validation_loss_batched

    store = ImageStore(synthetic_root / "GlaS", read_split(synthetic_root / "splits", "test"))
    sizes = {tuple(image.shape[-2:]) for image in store.images}
    assert len(sizes) == 2  # batches of each size, as on GlaS
    torch.manual_seed(0)
    model = UNet(3, 2, base_width=4)
    cpu = torch.device("cpu")
    one_by_one = validation_loss(model, GlasDataset(store), cpu, None)
    batched = validation_loss_batched(model, GlasDataset(store), cpu, None, batch_size=2)
    assert batched == pytest.approx(one_by_one, rel=1e-5)


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_precision_takes_bf16_only_where_the_gpu_has_it(
    native: bool, expected: torch.dtype | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from utils.loop.device import resolve_precision

    # A pre-Ampere GPU (V100, T4): torch says bf16 is supported, counting its slow emulation.
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("bf16", torch.device("cuda")) == torch.bfloat16  # asked for: given


@pytest.mark.parametrize(
    ("available", "count", "device", "refusal"),
    [
        (False, 0, "cuda", "device=cuda, but torch sees no CUDA GPU on this machine"),
        (True, 1, "cuda:1", "device=cuda:1, but torch sees 1 CUDA GPU on this machine"),
        (True, 2, "cuda:1", None),
        (False, 0, "cpu", None),
    ],
)
def test_a_gpu_the_machine_lacks_is_refused_in_one_line(
    available: bool, count: int, device: str, refusal: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from utils.config import ConfigError
    from utils.loop.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if refusal is None:
        assert pick_device(device) == torch.device(device)
        return
    with pytest.raises(ConfigError, match=refusal):
        pick_device(device)


class TwoMinds(nn.Module):
    """Two kinds of pass that disagree by blocks of two columns: gland probability 0.9, 0.2,
    0.6, 0.3 in odd passes and 0.2, 0.9, 0.3, 0.6 in even ones."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        TwoMinds.calls += 1
        odd = TwoMinds.calls % 2 == 1
        p = torch.tensor([0.9, 0.2, 0.6, 0.3] if odd else [0.2, 0.9, 0.3, 0.6])
        gland = torch.log(p / (1 - p)).repeat_interleave(2).expand(x.shape[0], *x.shape[2:])
        return torch.stack([torch.zeros_like(gland), gland], 1)  # [k, 2, H, W]


def test_the_test_dice_is_that_of_the_mc_average() -> None:
    from utils.loop.inference import MCSettings, evaluate_bma

    mask = torch.zeros(4, 8, dtype=torch.long)
    mask[:, :4] = 1  # the first two blocks are gland
    dataset = [(torch.zeros(3, 4, 8), mask, 0, "img")]
    TwoMinds.calls = 0
    dice = evaluate_bma(TwoMinds(), dataset, MCSettings(2, 1, torch.device("cpu"), None), False)
    # The mean, 0.55 0.55 0.45 0.45, is gland on exactly the first two blocks: Dice 1. Either
    # pass alone would give 0.5, and the most confident pass per pixel 2/3.
    assert TwoMinds.calls == 2 and dice == {"img": [1.0]}
    TwoMinds.calls = 0
    single = evaluate_bma(TwoMinds(), dataset, MCSettings(1, 1, torch.device("cpu"), None), False)
    assert single["img"][0] == pytest.approx(0.5)
