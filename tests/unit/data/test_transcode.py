"""transcode: reduced-scale JPEG decode gives the same picture as a full decode; odd modes and limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fixtures.raw_inputs import image
from PIL import Image

from ito_core.data.transcode import TranscodeOptions, transcode


def _jpeg(picture: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95, **save)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_draft_decode_matches_a_full_decode() -> None:
    wide = Image.new("RGB", (600, 200), (0, 0, 255))
    wide.paste((255, 0, 0), (200, 0, 400, 200))  # red centre third, blue sides: the crop must keep the centre
    wide.paste((0, 255, 0), (250, 50, 350, 150))
    reason, jpg = transcode(_jpeg(wide), TranscodeOptions(image_size=48))  # draft decodes at 1/4
    assert reason == ""
    reference = wide.crop((200, 0, 400, 200)).resize((48, 48), Image.Resampling.BICUBIC)
    assert np.abs(_decoded(jpg) - np.asarray(reference, dtype=np.float32)).mean() < 6


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "L"])
def test_other_modes_become_rgb_jpegs(mode: str) -> None:
    picture = Image.open(io.BytesIO(image(3, (40, 30)))).convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if mode in ("CMYK", "L") else "PNG")
    reason, jpg = transcode(buffer.getvalue(), TranscodeOptions(image_size=16))
    out = Image.open(io.BytesIO(jpg))
    assert reason == "" and out.format == "JPEG" and out.mode == "RGB" and out.size == (16, 16)


def test_pixel_limit_catches_both_of_pils_bomb_levels() -> None:
    data = image(4, (100, 100))  # 10 000 pixels
    assert transcode(data, TranscodeOptions(image_size=16, max_pixels=9_000))[0] == "decompression_bomb"  # warning
    assert transcode(data, TranscodeOptions(image_size=16, max_pixels=4_000))[0] == "decompression_bomb"  # error
    assert transcode(data, TranscodeOptions(image_size=16, max_pixels=10_000))[0] == ""
    assert Image.MAX_IMAGE_PIXELS == 89478485  # the process-wide limit is left as it was


def test_bad_resize_mode_names_the_key() -> None:
    with pytest.raises(ValueError, match="data.resize_mode"):
        TranscodeOptions(image_size=16, resize_mode="stretch")
