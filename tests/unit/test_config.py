"""Config dataclasses and params.yaml loading: every section builds, bad values name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from blip_core.config.data import ReaderConfig, TokenizerConfig, WorldConfig
from blip_core.config.loader import from_dict, load_params_section

ROOT = Path(__file__).resolve().parents[2]


def test_params_yaml_sections_build():
    params = ROOT / "params.yaml"
    world = load_params_section(params, "world", WorldConfig)
    assert world.num_web > world.num_coco_train
    load_params_section(params, "reader", ReaderConfig)
    load_params_section(params, "tokenizer", TokenizerConfig)


def test_default_world_config_matches_dataclass_defaults():
    # configs/default-world.yaml is the full-size study; the code defaults describe the same world
    # (params.yaml holds the smaller world that `make run` finishes in ~10 minutes)
    params = yaml.safe_load((ROOT / "configs" / "default-world.yaml").read_text())
    assert from_dict(WorldConfig, params["world"], section="world") == WorldConfig()


@pytest.mark.parametrize("path", ["params.yaml", "configs/default-world.yaml"])
def test_every_params_section_builds(path):
    from blip_core.config.loader import check_params, params_sections, section_class
    from blip_core.config.train import TrainConfig
    from blip_core.registry import tasks

    doc = check_params(ROOT / path)  # every section into its dataclass
    assert set(doc) == set(params_sections())
    assert {section_class(t.section) for t in tasks().values() if t.section} == {TrainConfig}
    assert section_class("capfilt").__name__ == "CapFiltConfig"
    with pytest.raises(ValueError, match="unknown params section 'capfit'"):
        section_class("capfit")


def test_check_params_names_a_bad_key_in_any_section(tmp_path):
    from blip_core.config.loader import check_params

    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"world": {"seed": 1}, "finetune_caption": {"lrr": 0.1}}))
    with pytest.raises(ValueError, match=r"finetune_caption\.lrr"):
        check_params(bad)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"Unknown config key: world\.nmu_web"):
        from_dict(WorldConfig, {"nmu_web": 3}, section="world")


def test_wrong_type_is_named():
    with pytest.raises(ValueError, match=r"Wrong type for world\.num_web"):
        from_dict(WorldConfig, {"num_web": "many"}, section="world")
    with pytest.raises(ValueError, match=r"Wrong type for world\.web_noise"):
        from_dict(WorldConfig, {"web_noise": {"spam": "lots"}}, section="world")
    assert from_dict(WorldConfig, {"novel_fraction": 0.2}, section="world").novel_fraction == 0.2


def test_bad_value_is_named():
    with pytest.raises(ValueError, match=r"reader\.max_image_pixels"):
        ReaderConfig(max_image_pixels=0)
    with pytest.raises(ValueError, match=r"tokenizer\.vocab_size"):
        TokenizerConfig(vocab_size=3)
    for groups in (["shape", "texture"], [], ["shape", "shape"]):
        with pytest.raises(ValueError, match=r"world\.object_labels"):
            WorldConfig(object_labels=groups)
    assert WorldConfig(object_labels=["shape"]).object_labels == ["shape"]


def test_scaled_world():
    cfg = WorldConfig().scaled(0.01)
    assert cfg.num_web == 100 and cfg.num_coco_train == 20 and cfg.num_val == 2
    assert WorldConfig().scaled(0.0001).num_val == 1
    with pytest.raises(ValueError, match="--scale"):
        WorldConfig().scaled(0)


def test_malformed_params_yaml_is_one_line_with_file_and_line(tmp_path):
    from blip_core.config.data import WorldConfig
    from blip_core.config.loader import load_params_section

    bad = tmp_path / "params.yaml"
    bad.write_text("world:\n  seed: 0\n  image_size: [64\npretrain:\n  lr: 1\n")
    with pytest.raises(ValueError) as err:
        load_params_section(bad, "world", WorldConfig)
    msg = str(err.value)
    assert msg.startswith(f"{bad}:") and "not valid YAML" in msg and "\n" not in msg
    # an unclosed quote is reported on its own line, not at the end of the file where parsing stopped
    bad.write_text('world:\n  seed: 0\n  name: "unclosed\n' + "".join(f"  k{i}: {i}\n" for i in range(9)))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:3:9: not valid YAML: .*quoted scalar"):
        load_params_section(bad, "world", WorldConfig)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_params_section(bad, "world", WorldConfig)


def test_itm_word_loss_needs_swap_negatives():
    from blip_core.config.train import TrainConfig

    assert TrainConfig(task="retrieval", itm_swap_negatives=True, itm_word_loss=1.0).itm_word_loss == 1.0
    for bad in ({"task": "retrieval", "itm_word_loss": 1.0},
                {"task": "retrieval", "itm_swap_negatives": True, "itm_word_loss": -1.0}):  # fmt: skip
        with pytest.raises(ValueError, match="itm_word_loss"):
            TrainConfig(**bad)


def test_unlikelihood_is_a_caption_weight():
    from blip_core.config.train import TrainConfig

    assert TrainConfig(task="caption", lm_unlikelihood=0.5).lm_unlikelihood == 0.5
    for bad in ({"task": "retrieval", "lm_unlikelihood": 0.5}, {"task": "caption", "lm_unlikelihood": -1.0}):
        with pytest.raises(ValueError, match="lm_unlikelihood"):
            TrainConfig(**bad)


def test_count_statements_are_for_caption_and_retrieval_fine_tunes():
    from blip_core.config.train import TrainConfig

    assert TrainConfig(task="caption", count_statements=8).count_statements == 8
    cfg = TrainConfig(task="retrieval", count_statements=8, count_statement_kind="group")
    assert cfg.count_statement_kind == "group"
    for bad, match in (({"task": "vqa", "count_statements": 8}, "count_statements"),
                       ({"task": "caption", "count_statements": -1}, "count_statements"),
                       ({"task": "caption", "count_statement_kind": "caption"}, "count_statement_kind")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
