from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ito_core.data.augment import CLIP_MEAN, CLIP_STD, MultiViewAugment, eval_transform


def _images(batch: int = 4, height: int = 40, width: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)


def test_views_shape_dtype_and_range() -> None:
    views_BMCSS = MultiViewAugment(image_size=24, num_views=3)(_images())
    assert views_BMCSS.shape == (4, 3, 3, 24, 24) and views_BMCSS.dtype == torch.float32
    low_C = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    high_C = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    per_channel_CX = views_BMCSS.transpose(0, 2).reshape(3, -1)
    assert (per_channel_CX.min(dim=1).values >= low_C - 1e-5).all()
    assert (per_channel_CX.max(dim=1).values <= high_C + 1e-5).all()
    assert not torch.equal(views_BMCSS[:, 0], views_BMCSS[:, 1])  # views of one image differ


def test_views_follow_the_images() -> None:
    images_BCHW = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images_BCHW[1] = 255  # a black and a white image: every view keeps its image's brightness order
    augment = MultiViewAugment(image_size=16, num_views=4, jitter=(0.0, 0.0, 0.0, 0.0), gray_p=0.0)
    views_BMCSS = augment(images_BCHW)
    assert (views_BMCSS[0].mean(dim=(1, 2, 3)) < views_BMCSS[1].mean(dim=(1, 2, 3))).all()


def test_same_torch_seed_same_views_other_rngs_irrelevant() -> None:
    augment, images_BCHW = MultiViewAugment(image_size=24, num_views=2), _images()
    torch.manual_seed(7), random.seed(1), np.random.seed(1)
    first = augment(images_BCHW)
    torch.manual_seed(7), random.seed(2), np.random.seed(2)
    assert torch.equal(first, augment(images_BCHW))
    torch.manual_seed(8)
    assert not torch.equal(first, augment(images_BCHW))


def test_restoring_rng_state_resumes_bit_exactly() -> None:
    augment, images_BCHW = MultiViewAugment(image_size=24, num_views=2), _images()
    torch.manual_seed(0)
    augment(images_BCHW)
    state = torch.get_rng_state()  # what a checkpoint saves after step 1
    uninterrupted = [augment(images_BCHW) for _ in range(3)]
    torch.manual_seed(123)  # a "new process"
    torch.set_rng_state(state)
    resumed = [MultiViewAugment(image_size=24, num_views=2)(images_BCHW) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed, strict=True))


def test_eval_transform_resizes_crops_and_normalises() -> None:
    images_BCHW = torch.full((2, 3, 30, 50), 128, dtype=torch.uint8)
    out_BCSS = eval_transform(images_BCHW, 20)
    assert out_BCSS.shape == (2, 3, 20, 20)
    expected_C = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out_BCSS.mean(dim=(0, 2, 3)), expected_C)
    stripes_BCHW = torch.zeros(1, 3, 20, 60, dtype=torch.uint8)
    stripes_BCHW[..., 20:40] = 255  # white centre third survives the centre crop, nothing else does
    white_BCHW = torch.full((1, 3, 20, 20), 255, dtype=torch.uint8)
    assert torch.equal(eval_transform(stripes_BCHW, 20), eval_transform(white_BCHW, 20))


def test_wrong_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="uint8"):
        MultiViewAugment(image_size=8, num_views=1)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="ito.images"):
        MultiViewAugment(image_size=8, num_views=0)
