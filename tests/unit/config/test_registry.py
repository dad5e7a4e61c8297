"""Validation and dispatch read one table per kind of choice (ito_core.config.registry): every entry resolves to
its code, validation accepts exactly the table's names, and a kind registered only here validates and is
dispatched to without touching anything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ito_core.config import DataConfig, load_config
from ito_core.config.registry import EVAL_LAYOUTS, RAW_INPUT_KINDS, resolve
from ito_core.data import sources  # not its functions by name: this module is a reader, whose names count
from ito_core.data.sources import RawRecord


def records(data: DataConfig) -> Iterator[RawRecord]:
    """A raw input kind defined only in this test: one record per line of ``data.input``."""
    for n, line in enumerate(Path(data.input).read_text().splitlines()):
        yield RawRecord(source=f"{data.input}:{n}", captions=[line], image_url=f"{line}.jpg")


@pytest.mark.parametrize("kind", sorted(RAW_INPUT_KINDS))
def test_every_input_kind_resolves_to_a_reader_module(kind: str) -> None:
    assert callable(resolve(RAW_INPUT_KINDS, kind).records)


@pytest.mark.parametrize("layout", sorted(EVAL_LAYOUTS))
def test_every_eval_layout_resolves_to_a_reader(layout: str) -> None:
    assert callable(resolve(EVAL_LAYOUTS, layout))


def test_validation_names_the_table_for_an_unknown_input_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.input_kind: 'lines' is not supported; choose one of \['img2dataset'"):
        load_config(["data=raw", "data.input_kind=lines", f"data.input={tmp_path}", "data.caption_columns=[txt]"])


def test_an_input_kind_registered_in_the_table_validates_and_is_read(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RAW_INPUT_KINDS, "lines", __name__)
    listing = tmp_path / "pairs.lines"
    listing.write_text("a red square\na blue circle\n")
    data = load_config(["data=raw", "data.input_kind=lines", f"data.input={listing}",
                        "data.caption_columns=[txt]"]).data
    assert [r.captions for r in sources.read_records(data, start=1)] == [["a blue circle"]]
    assert sources.record_counts(data) is None  # the kind has no record_counts: prep reads it whole


def test_an_eval_layout_registered_in_the_table_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="eval.datasets.mine"):
        load_config(["+eval.datasets.mine=lines:/data/mine"])
    monkeypatch.setitem(EVAL_LAYOUTS, "lines", f"{__name__}:records")
    assert load_config(["+eval.datasets.mine=lines:/data/mine"]).eval.datasets == {"mine": "lines:/data/mine"}
