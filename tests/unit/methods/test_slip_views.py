"""SLIP's views: view 0 with the loop's usual recipe, views 1-2 with SimCLR's (crop 0.08-1, blur, flip)."""

import torch
from kornia import augmentation as K

from ito_core.config import ModelConfig
from ito_core.data.augment import MultiViewAugment, simclr_views
from ito_core.methods.slip.model import SlipViews
from ito_core.models.vision import VisionTransformer


def _images(batch: int = 3, side: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, side, side), generator=gen, dtype=torch.uint8)


def _plain(image_size: int = 16, **kwargs) -> MultiViewAugment:
    """No crop, jitter or grayscale: only what ``kwargs`` switch on changes the image."""
    return MultiViewAugment(image_size=image_size, num_views=1, scale=(1.0, 1.0), jitter=(0.0, 0.0, 0.0, 0.0),
                            jitter_p=0.0, gray_p=0.0, **kwargs)


def test_simclr_recipe_adds_blur_and_flip_to_a_wider_crop():
    steps = list(simclr_views(image_size=32, num_views=2).views.children())
    assert [type(s) for s in steps[3:]] == [K.RandomGaussianBlur, K.RandomHorizontalFlip]
    assert tuple(steps[0]._param_generator.scale) == (0.08, 1.0)
    assert [type(s) for s in MultiViewAugment(image_size=32, num_views=2).views.children()] == [
        K.RandomResizedCrop, K.ColorJitter, K.RandomGrayscale]


def test_flip_mirrors_and_blur_smooths():
    ramp_BCHW = torch.arange(16, dtype=torch.uint8).mul(16).expand(1, 3, 16, 16).contiguous()
    same, flipped = _plain()(ramp_BCHW), _plain(flip_p=1.0)(ramp_BCHW)
    torch.testing.assert_close(flipped, same.flip(-1))
    # At 224 px the blur is SimCLR's (sigma 0.1-2 px): a fine checkerboard loses contrast on average.
    checker_BCHW = ((torch.arange(224)[:, None] + torch.arange(224)) % 2 * 255).to(torch.uint8).expand(8, 3, 224, 224)
    torch.manual_seed(0)
    blurred = _plain(blur_p=1.0, image_size=224)(checker_BCHW)
    assert blurred.std() < 0.8 * _plain(image_size=224)(checker_BCHW).std()


def test_slip_views_are_one_clip_view_then_two_simclr_views():
    images = _images()
    torch.manual_seed(3)
    views_BMCSS = SlipViews(image_size=24)(images)
    assert views_BMCSS.shape == (3, 3, 3, 24, 24)
    torch.manual_seed(3)  # view 0 is drawn first, with the recipe method=clip trains on
    torch.testing.assert_close(views_BMCSS[:, :1], MultiViewAugment(image_size=24, num_views=1)(images))
    assert not torch.equal(views_BMCSS[:, 1], views_BMCSS[:, 2])


def test_unprojected_pooled_feature_is_the_one_before_the_projection():
    cfg = ModelConfig(name="t", embed_dim=8, image_size=16, patch_size=8, vision_width=12, vision_layers=1,
                      vision_heads=2)
    tower = VisionTransformer(cfg)
    images = torch.randn(2, 3, 16, 16)
    pooled_BD, _ = tower(images, project=False)
    assert pooled_BD.shape == (2, 12)
    torch.testing.assert_close(pooled_BD @ tower.proj, tower(images)[0])
