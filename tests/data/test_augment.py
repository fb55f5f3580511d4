"""Augmentation keeps optical, SAR and label registered and gives crop-sized, reproducible outputs."""

from __future__ import annotations

import pytest
import torch

from mdseg.data import IGNORE, Augment

_BLOCK = 8


def _blocks(h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optical band 0 is the class of 8 x 8 blocks (a function of position), band 1 noise; SAR = −optical;
    label = class. After any augmentation the label must still equal optical band 0 where that is a whole value."""
    g = torch.Generator().manual_seed(0)
    cls = (torch.arange(h)[:, None] // _BLOCK * 3 + torch.arange(w)[None, :] // _BLOCK) % 5
    opt = torch.stack([cls.float(), torch.rand(h, w, generator=g)])
    return opt, -opt, cls.long()


def _run(augment: Augment, seed: int):
    opt, sar, label = _blocks()
    return augment(opt, sar, label, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(6))
def test_flips_turns_and_crops_keep_modalities_and_label_aligned(seed):
    opt, sar, label = _run(Augment(crop=32, scale=(1.0, 1.0)), seed)
    assert opt.shape == (2, 32, 32) and sar.shape == (2, 32, 32) and label.shape == (32, 32)
    assert torch.equal(sar, -opt)
    assert torch.equal(label, opt[0].long())


@pytest.mark.parametrize("seed", range(6))
def test_resizing_keeps_label_on_the_pixels_it_belongs_to(seed):
    opt, sar, label = _run(Augment(crop=40), seed)
    assert torch.equal(sar, -opt)  # bilinear resampling is linear: both modalities saw the same warp
    labelled = label != IGNORE
    # pixels inside a block: optical constant over their 3 x 3 neighbourhood (not blended across an edge)
    values = opt[0][None, None]
    flat = (torch.nn.functional.max_pool2d(values, 3, 1, 1) == -torch.nn.functional.max_pool2d(-values, 3, 1, 1))[0, 0]
    whole = labelled & flat
    assert whole.sum() > 0.2 * labelled.sum()
    assert torch.equal(label[whole], opt[0][whole].long())
    # blended edge pixels still carry one of their two neighbouring classes
    assert ((label[labelled].float() - opt[0][labelled]).abs() < 5).all()


def test_small_inputs_are_padded_with_ignore():
    opt, sar, label = _blocks(10, 12)
    opt, sar, label = Augment(crop=16, scale=(1.0, 1.0), rotate90=False, hflip=False, vflip=False)(
        opt, sar, label, torch.Generator().manual_seed(0)
    )
    assert opt.shape == (2, 16, 16) and (label[10:] == IGNORE).all() and (label[:, 12:] == IGNORE).all()
    assert (opt[:, 10:] == 0).all() and (label[:10, :12] != IGNORE).all()


def test_same_generator_seed_gives_the_same_sample():
    a, b = _run(Augment(crop=24), 7), _run(Augment(crop=24), 7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_crops_dominated_by_one_class_are_redrawn():
    """A 64 x 64 label of class 0 with class 1 in its top-left 32 x 32 corner: with cat_max_ratio nearly every crop
    shows both classes, neither above 75 %; without it far fewer do."""
    label = torch.zeros(64, 64, dtype=torch.long)
    label[:32, :32] = 1
    opt = label[None].float()

    def mixed(ratio: float) -> int:
        count = 0
        for seed in range(40):
            g = torch.Generator().manual_seed(seed)
            _, _, out = Augment(crop=24, scale=(1.0, 1.0), cat_max_ratio=ratio)(opt, -opt, label, g)
            counts = torch.bincount(out.flatten(), minlength=2)
            count += int(counts[1] > 0 and counts.max() <= 0.75 * counts.sum())
        return count

    assert mixed(0.75) >= 36 and mixed(1.0) <= 20
