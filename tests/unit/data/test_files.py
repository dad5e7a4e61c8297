"""The local side of the data readers' file helpers (S3 goes through ``ito_core.storage``, tested there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ito_core.data.files import is_image_name, list_files, read_bytes


def test_read_bytes_expands_home_and_raises_or_not_for_a_missing_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.txt").write_bytes(b"one\n")
    assert read_bytes("~/a.txt") == read_bytes(str(tmp_path / "a.txt")) == b"one\n"
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "missing.txt"))
    for absent in ("missing.txt", ".", "a.txt/below"):  # no file, a folder, a path through a file
        assert read_bytes(str(tmp_path / absent), missing_ok=True) is None


def test_list_files_walks_top_down_sorted_per_folder_and_follows_links_only_when_asked(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    for path in ("b.jpg", "a/2.png", "a/1.png", "a-b/x.jpg", "a/deep/z.txt"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    elsewhere.mkdir()
    (elsewhere / "c.jpg").write_bytes(b"")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)

    walked = ["b.jpg", "a/1.png", "a/2.png", "a/deep/z.txt", "a-b/x.jpg"]
    assert list(list_files(str(root), follow_links=False)) == walked
    assert list(list_files(str(root), follow_links=True)) == [*walked, "linked/c.jpg"]
    assert list(list_files(str(tmp_path / "missing"), follow_links=True)) == []


@pytest.mark.parametrize(("name", "image"), [
    ("a/b.JPG", True), ("x.tiff", True), ("x.bmp", True), ("x.webp", True),
    ("x.txt", False), ("jpg", False), ("x.jpg.txt", False)])
def test_is_image_name_by_extension_in_any_case(name: str, image: bool) -> None:
    assert is_image_name(name) is image
