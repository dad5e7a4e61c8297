"""Eval on a user set end to end on CPU: prep records class names, the eval stage uses them, a changed eval
config is evaluated again, and precision and task/set mismatches fail naming the key."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from ito_core.config import RunConfig, load_config
from ito_core.eval import encode, suite
from ito_core.eval.stage import committed_eval, run_eval
from ito_core.models.dual_encoder import DualEncoder
from ito_core.prep import prepare, shard_urls
from ito_core.storage import MANIFEST, ArtifactStore, LocalStore, commit
from ito_core.strip import write_model_folder

RUN_KEY = "runs/user-sets"
CLASSES = {"red_square": (230, 30, 30), "green_square": (30, 230, 30), "blue_square": (30, 30, 230)}
NO_EMBEDDED = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]


def write_class_tree(root: Path, per_class: int = 4) -> Path:
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(max(0, c - 20 * i) for c in colour)
            Image.new("RGB", (20, 16), shade).save(root / name / f"{i}.png")
    return root


def user_set_config(tmp_path: Path, spec: str, *overrides: str) -> RunConfig:
    return load_config(["model=tiny", "data.image_size=32", "data.sources=[shapes]", "data.shapes_train=8",
                        f"storage.root={tmp_path / 'store'}",
                        f"cluster.work_dir={tmp_path / 'work'}", *NO_EMBEDDED, f"+eval.datasets.colours={spec}",
                        "eval.zero_shot=colours", "eval.batch_size=5", *overrides])


def commit_random_model(store: ArtifactStore, cfg: RunConfig, run_key: str) -> None:
    """A stripped-model folder of a randomly initialised dual encoder, as the strip stage commits it."""
    torch.manual_seed(0)
    state = {k: v.clone().contiguous() for k, v in DualEncoder(cfg.model).state_dict().items()}
    manifest = {"checkpoint": "random-init", "num_parameters": sum(v.numel() for v in state.values()),
                "dropped_parameters": 0, "steps": 0, "final_loss": None, "data_key": "none",
                "data_manifest_sha256": "unknown", "source_checkpoint": "none"}
    with tempfile.TemporaryDirectory() as tmp:
        write_model_folder(state, cfg, Path(tmp), manifest)
        store.upload_dir(Path(tmp), f"{run_key}/model")
    commit(store, f"{run_key}/model", manifest)


def test_zero_shot_on_a_class_folder_tree_end_to_end(tmp_path: Path) -> None:
    tree = write_class_tree(tmp_path / "colours")
    cfg = user_set_config(tmp_path, f"folder:{tree}", "eval.linear_probe=colours", "eval.probe_c_grid=[1.0]",
                          "eval.probe_val_fraction=0.25", "eval.probe_test_fraction=0.25")
    store = LocalStore(cfg.storage.root)
    keys = prepare(cfg.data, cfg.eval, store)
    manifest = store.read_json(f"{keys['colours']}/{MANIFEST}")
    assert manifest["classnames"] == ["blue square", "green square", "red square"] and not manifest["captioned"]
    assert manifest["num_samples"] == 12 and shard_urls(store, keys["colours"])[1] == 12
    commit_random_model(store, cfg, RUN_KEY)

    records = run_eval(cfg, store=store, run_key=RUN_KEY, data_keys=keys, staging=tmp_path / "staging")

    assert [(r["dataset"], r["task"]) for r in records] == [("colours", "zeroshot_classification"),
                                                           ("colours", "linear_probe")]
    assert set(records[0]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert records[0]["metrics"]["acc5"] == 1.0  # top-min(5, 3): every label is among 3 classes
    assert committed_eval(store, RUN_KEY, cfg) == records
    assert committed_eval(store, RUN_KEY, user_set_config(tmp_path, f"folder:{tree}", "eval.batch_size=7",
                                                          "eval.linear_probe=colours", "eval.probe_c_grid=[1.0]",
                                                          "eval.probe_val_fraction=0.25",
                                                          "eval.probe_test_fraction=0.25")) == records
    assert committed_eval(store, RUN_KEY, cfg_changed := user_set_config(tmp_path, f"folder:{tree}")) is None
    again = run_eval(cfg_changed, store=store, run_key=RUN_KEY, data_keys=keys, staging=tmp_path / "staging")
    assert [r["task"] for r in again] == ["zeroshot_classification"]
    assert again[0]["metrics"] == records[0]["metrics"]  # same model, same set
    assert "| colours | zeroshot_classification |" in (Path(store.url(RUN_KEY)) / "model" / "README.md").read_text()


def test_prep_refuses_retrieval_on_a_set_without_captions_before_reading_images(tmp_path: Path) -> None:
    tree = write_class_tree(tmp_path / "colours")
    cfg = user_set_config(tmp_path, f"folder:{tree}", "eval.retrieval=colours")
    with pytest.raises(ValueError, match=r"eval\.retrieval='colours': the set has no captions of its own"):
        prepare(cfg.data, cfg.eval, LocalStore(cfg.storage.root))
    assert not list(Path(cfg.storage.root).glob("data/eval-colours-*/*.tar"))


def test_missing_user_set_fails_at_prep_naming_the_key(tmp_path: Path) -> None:
    cfg = user_set_config(tmp_path, f"imagenet:{tmp_path / 'imagenet' / 'val'}")
    with pytest.raises(ValueError, match=r"eval\.datasets\.colours='imagenet:.*no files under"):
        prepare(cfg.data, cfg.eval, LocalStore(cfg.storage.root))


def test_the_store_key_follows_the_source_spec(tmp_path: Path) -> None:
    tree = write_class_tree(tmp_path / "colours", per_class=1)
    other = write_class_tree(tmp_path / "other", per_class=2)
    first = prepare(*_data_eval(user_set_config(tmp_path, f"folder:{tree}")), LocalStore(tmp_path / "store"))
    second = prepare(*_data_eval(user_set_config(tmp_path, f"folder:{other}")), LocalStore(tmp_path / "store"))
    assert first["colours"] != second["colours"]
    assert shard_urls(LocalStore(tmp_path / "store"), second["colours"])[1] == 6


def _data_eval(cfg: RunConfig) -> tuple:
    return cfg.data, cfg.eval


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    tmp_path = tmp_path_factory.mktemp("colour_shards")
    cfg = user_set_config(tmp_path, f"folder:{write_class_tree(tmp_path / 'colours')}")
    store = LocalStore(cfg.storage.root)
    key = prepare(cfg.data, cfg.eval, store)["colours"]
    return shard_urls(store, key)[0], store.read_json(f"{key}/{MANIFEST}")


def test_bf16_autocast_on_cpu_stays_close_to_fp32(colour_shards: tuple[list[str], dict], tmp_path: Path) -> None:
    shards, _ = colour_shards
    features = {}
    for precision in ("fp32", "bf16"):
        cfg = user_set_config(tmp_path, "folder:/unused", f"eval.precision={precision}")
        torch.manual_seed(0)
        model = DualEncoder(cfg.model)
        features[precision] = encode.encode_eval_set(model, shards, cfg, with_texts=False).images_ND
    assert features["bf16"].dtype == torch.float32
    assert not torch.equal(features["bf16"], features["fp32"])  # autocast did run in bf16
    assert torch.allclose(features["bf16"], features["fp32"], atol=0.05)


def test_fp16_needs_cuda_and_names_the_key(colour_shards: tuple[list[str], dict], tmp_path: Path) -> None:
    shards, manifest = colour_shards
    cfg = user_set_config(tmp_path, "folder:/unused", "eval.precision=fp16")
    with pytest.raises(ValueError, match=r"eval\.precision=fp16 on a cpu device.*bf16 or fp32"):
        suite.evaluate(DualEncoder(cfg.model), cfg, {"colours": shards}, model_name="tiny", pretrained="x",
                       manifests={"colours": manifest})
    with pytest.raises(ValueError, match=r"eval\.precision.*'fp8' is not supported"):
        load_config(["eval.precision=fp8"])
    with pytest.raises(ValueError, match=r"eval\.executor.*'slurm' is not supported"):
        load_config(["eval.executor=slurm"])


def test_zero_shot_class_names_come_from_the_manifest(colour_shards: tuple[list[str], dict], tmp_path: Path) -> None:
    shards, manifest = colour_shards
    cfg = user_set_config(tmp_path, "folder:/unused")
    seen: list[list[str]] = []
    real = encode.build_zero_shot_classifier

    def spy(model: DualEncoder, classnames: list[str], *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(list(classnames))
        return real(model, classnames, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encode, "build_zero_shot_classifier", spy)
        suite.evaluate(DualEncoder(cfg.model), cfg, {"colours": shards}, model_name="tiny", pretrained="x",
                       manifests={"colours": manifest})
    assert seen == [["blue square", "green square", "red square"]]
    with pytest.raises(ValueError, match=r"eval\.zero_shot='colours': the set has no class names"):
        suite.evaluate(DualEncoder(cfg.model), cfg, {"colours": shards}, model_name="tiny", pretrained="x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_and_bf16_on_cuda_stay_close_to_fp32(colour_shards: tuple[list[str], dict], tmp_path: Path) -> None:
    shards, _ = colour_shards
    features = {}
    for precision in ("fp32", "bf16", "fp16"):
        cfg = user_set_config(tmp_path, "folder:/unused", f"eval.precision={precision}")
        torch.manual_seed(0)
        model = DualEncoder(cfg.model).cuda()
        feats = encode.encode_eval_set(model, shards, cfg, with_texts=True)
        features[precision] = torch.cat([feats.images_ND, feats.texts_TD]).cpu()
    for precision in ("bf16", "fp16"):
        assert features[precision].dtype == torch.float32
        assert torch.allclose(features[precision], features["fp32"], atol=0.05), precision

