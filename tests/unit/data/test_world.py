"""The embedded world: determinism, noise rates, novel combinations, caption truth."""

from __future__ import annotations

import filecmp
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import tiny_world_config

from blip_core.config.data import WorldConfig
from blip_core.data.reader import ReadStats, iter_samples
from blip_core.data.world import lexicon as lx
from blip_core.data.world.generate import generate_world
from blip_core.data.world.grounding import Scene, ground_caption
from blip_core.data.world.noise import assign_noise_type
from blip_core.data.world.render import held_out_combos, sample_scene
from blip_core.data.world.samples import make_sample


def _tree_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_shards_regardless_of_workers(tmp_path):
    a = generate_world(tiny_world_config(num_web=150, num_workers=2), tmp_path / "a", progress=False)
    b = generate_world(tiny_world_config(num_web=150, num_workers=1), tmp_path / "b", progress=False)
    assert a["splits"] == b["splits"]
    files = _tree_files(tmp_path / "a")
    assert files == _tree_files(tmp_path / "b")
    assert any(f.suffix == ".tar" for f in files)
    for f in files:
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False), f


def test_different_seed_gives_different_shards(tmp_path):
    generate_world(tiny_world_config(seed=1, num_web=50), tmp_path / "a", progress=False)
    generate_world(tiny_world_config(seed=2, num_web=50), tmp_path / "b", progress=False)
    for split in ("coco_train", "web"):
        assert (tmp_path / "a" / split / "00000.tar").read_bytes() != (
            tmp_path / "b" / split / "00000.tar"
        ).read_bytes()


def test_regenerating_into_same_folder_removes_stale_shards(tmp_path):
    generate_world(tiny_world_config(num_web=250, shard_size=100), tmp_path, progress=False)
    assert len(list((tmp_path / "web").glob("*.tar"))) == 3
    generate_world(tiny_world_config(num_web=50, shard_size=100), tmp_path, progress=False)
    assert len(list((tmp_path / "web").glob("*.tar"))) == 1


def test_split_layout_and_stats(tiny_world):
    cfg = tiny_world_config()
    summary = json.loads((tiny_world / "world.json").read_text())
    for split, n in cfg.split_sizes().items():
        stats = json.loads((tiny_world / split / "_stats.json").read_text())
        assert stats["num_samples"] == n == summary["splits"][split]["num_samples"]
        assert stats["num_shards"] == len(list((tiny_world / split).glob("*.tar")))
        assert len(list((tiny_world / split).glob("*.manifest.parquet"))) == stats["num_shards"]
    # the web pool is several times larger than the clean split, like real web data
    assert WorldConfig().num_web >= 4 * WorldConfig().num_coco_train


def test_noise_rates_match_config():
    cfg = WorldConfig()
    n = 20000
    counts = Counter(assign_noise_type(cfg, i) for i in range(n))
    for name, rate in cfg.web_noise.items():
        assert abs(counts[name] / n - rate) < 0.01, (name, counts[name] / n, rate)
    assert abs(counts["clean"] / n - (1 - cfg.noise_rate)) < 0.015
    assert 0.35 <= cfg.noise_rate <= 0.45  # close to real web alt-text


def test_written_web_split_has_every_noise_type_at_its_rate(tiny_world):
    cfg = tiny_world_config()
    labels = Counter(s["meta"]["gt"]["noise_type"] for s in iter_samples(tiny_world / "web"))
    stats = json.loads((tiny_world / "web" / "_stats.json").read_text())
    assert dict(labels) == stats["noise_counts"]
    n = sum(labels.values())
    for name, rate in cfg.web_noise.items():
        assert labels[name] > 0
        assert abs(labels[name] / n - rate) < 0.06, (name, labels[name] / n)  # 240 draws: ~3 sd


def test_configurable_noise_rate():
    cfg = WorldConfig(web_noise={"spam": 0.5})
    counts = Counter(assign_noise_type(cfg, i) for i in range(4000))
    assert set(counts) == {"spam", "clean"}
    assert abs(counts["spam"] / 4000 - 0.5) < 0.03


def test_novel_combinations_only_in_web_and_novel():
    cfg = WorldConfig()
    held = set(held_out_combos(cfg))
    assert len(held) >= 5
    assert {c for c, _ in held} != set(lx.COLORS) or True
    # every colour and shape stays visible in the clean splits
    seen = {(c, s) for c in lx.COLORS for s in lx.SHAPES} - held
    assert {c for c, _ in seen} == set(lx.COLORS) and {s for _, s in seen} == set(lx.SHAPES)
    for split in ("coco_train", "val", "test"):
        for i in range(300):
            assert not {(o.color, o.shape) for o in sample_scene(cfg, split, i).objects} & held
    for i in range(100):
        assert {(o.color, o.shape) for o in sample_scene(cfg, "novel", i).objects} & held
    web_with_novel = sum(
        bool({(o.color, o.shape) for o in sample_scene(cfg, "web", i).objects} & held) for i in range(400)
    )
    assert web_with_novel > 80  # forced rate 0.25 plus chance


def test_scene_properties():
    cfg = WorldConfig()
    n_objects, shapes, colors, sizes, bgs = Counter(), set(), set(), set(), set()
    for i in range(500):
        sc = sample_scene(cfg, "web", i)
        n_objects[len(sc.objects)] += 1
        cells = {(o.row, o.col) for o in sc.objects}
        assert len(cells) == len(sc.objects)  # one object per grid cell
        shapes |= {o.shape for o in sc.objects}
        colors |= {o.color for o in sc.objects}
        sizes |= {o.size for o in sc.objects}
        bgs.add(sc.background)
    assert set(n_objects) == {1, 2, 3, 4}
    assert len(shapes) >= 8 and len(colors) >= 8 and sizes == {"small", "large"} and len(bgs) >= 4


def test_image_size_is_configurable():
    for size in (32, 64, 384):
        s = make_sample(WorldConfig(image_size=size), "coco_train", 0)
        assert s["size"] == (size, size)


def test_human_captions_are_true_and_varied():
    cfg = WorldConfig()
    words = Counter()
    for i in range(300):
        s = make_sample(cfg, "coco_train", i)
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        assert len(s["captions"]) == 5
        for c in s["captions"]:
            r = ground_caption(c, scene)
            assert r.is_true, (c, r.errors, scene)
            words.update(c.split())
    # synonyms, relations and counts all occur
    for w in ("disk", "block", "violet", "little", "big", "above", "beside", "two", "three"):
        assert words[w] > 0, w


def test_web_captions_truth_matches_noise_label():
    cfg = WorldConfig()
    seen = Counter()
    for i in range(600):
        s = make_sample(cfg, "web", i)
        gt = s["meta"]["gt"]
        r = ground_caption(s["captions"][0], Scene.from_dict(gt["scene"]))
        seen[gt["noise_type"]] += 1
        if gt["noise_type"] == "clean":
            assert r.is_true, (s["captions"], r.errors)
        elif gt["noise_type"] in ("corrupted", "mismatched"):
            assert not r.is_true and r.num_attributes > 0, s["captions"]
        else:  # spam and uninformative mention nothing checkable
            assert r.num_attributes == 0, s["captions"]
    assert set(seen) == {"clean", "mismatched", "corrupted", "spam", "uninformative"}


def test_corruptions_cover_every_attribute():
    cfg = WorldConfig()
    details = Counter()
    for i in range(1500):
        if assign_noise_type(cfg, i) == "corrupted":
            details[make_sample(cfg, "web", i)["meta"]["gt"]["noise_detail"]] += 1
    assert {"color", "shape", "count", "relation"} <= set(details)


def test_ground_truth_lives_only_in_json(tiny_world):
    s = next(iter(iter_samples(tiny_world / "web")))
    assert "gt" in s["meta"] and "noise_type" in s["meta"]["gt"]
    assert "noise" not in s["captions"][0]


def test_objects_split_is_label_only_and_its_labels_are_true_of_the_rendered_images(tiny_world):
    """The world's ImageNet (and Visual Genome): every image carries its shapes, colours, background
    and each object's box with its attributes as labels, no caption; the labels are those of the
    rendered scene, and each labelled colour is visibly in the image."""
    import numpy as np

    from blip_core.data.labelled import is_labelled, read_classes

    stats = ReadStats()
    samples = list(iter_samples(tiny_world / "objects", labelled=True, stats=stats))
    assert len(samples) == tiny_world_config().num_objects and stats.num_skipped == 0
    assert is_labelled(tiny_world / "objects") and not is_labelled(tiny_world / "coco_train")
    classes = read_classes([tiny_world / "objects"])
    assert set(classes) == {"shape", "color", "background", "region"}  # the default groups
    assert classes["shape"] == list(lx.SHAPES) and classes["color"] == list(lx.COLORS)
    counts = Counter()
    for s in samples:
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        assert s["captions"] == [] and set(s["labels"]) == {"shape", "color", "background", "region"}
        assert s["labels"]["shape"] == [x for x in lx.SHAPES if x in {o.shape for o in scene.objects}]
        assert s["labels"]["color"] == [x for x in lx.COLORS if x in {o.color for o in scene.objects}]
        assert s["labels"]["background"] == [scene.background]
        assert [(r["shape"], r["color"]) for r in s["labels"]["region"]] == [(o.shape, o.color) for o in scene.objects]
        counts[len(scene.objects)] += 1
        # the labelled colours are drawn: some pixels are nearer that colour than any other colour
        # or background tone (thin small rings blend with the background, so not "equal to it")
        pixels = np.asarray(s["image"], dtype=np.float32).reshape(-1, 3)
        palette = np.array([*lx.COLORS.values(), *lx.BACKGROUND_TONES], dtype=np.float32)
        nearest = np.linalg.norm(pixels[:, None, :] - palette[None], axis=-1).argmin(axis=1)
        for color in s["labels"]["color"]:
            assert (nearest == list(lx.COLORS).index(color)).sum() >= 3, (s["key"], color)
        # and the scene is exactly what was rendered (one deterministic draw per sample)
        rendered = make_sample(tiny_world_config(), "objects", int(s["key"].split("-")[1]))
        assert rendered["meta"]["labels"] == s["labels"]
    assert set(counts) == {1, 2, 3, 4}  # scenes like the clean splits', not isolated objects


def test_attribute_object_labels_bind_each_object_and_name_no_held_out_combination():
    """The optional groups: `object` ("<size> <colour> <shape>" per object, seen combinations only)
    and `background` (the scene's texture)."""
    from blip_core.data.world.samples import label_classes

    cfg = tiny_world_config(object_labels=["shape", "object", "background"])
    classes = label_classes(cfg)
    held = set(held_out_combos(cfg))
    assert list(classes) == ["shape", "object", "background"] and classes["background"] == list(lx.BACKGROUNDS)
    assert len(classes["object"]) == len(lx.SIZES) * (len(lx.COLORS) * len(lx.SHAPES) - len(held))
    assert not {tuple(name.split()[1:]) for name in classes["object"]} & held
    for i in range(20):
        s = make_sample(cfg, "objects", i)
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        assert set(s["meta"]["labels"]) == {"shape", "object", "background"}
        assert s["meta"]["labels"]["background"] == [scene.background]
        assert set(s["meta"]["labels"]["object"]) == {f"{o.size} {o.color} {o.shape}" for o in scene.objects}
        assert set(s["meta"]["labels"]["object"]) <= set(classes["object"])


def test_region_labels_box_each_object_where_it_is_drawn():
    """`region` (Visual Genome's role): one box per object with its shape, colour and size; the
    object's colour is drawn inside its box."""
    import io

    import numpy as np
    from PIL import Image

    from blip_core.data.world.labels import region_classes
    from blip_core.data.world.samples import label_classes

    cfg = tiny_world_config(object_labels=["shape", "color", "region"])
    assert label_classes(cfg)["region"] == region_classes()
    assert {n.split(":")[0] for n in region_classes()} == {"shape", "color", "size"}
    for i in range(12):
        s = make_sample(cfg, "objects", i)
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        regions = s["meta"]["labels"]["region"]
        assert [(r["shape"], r["color"], r["size"]) for r in regions] == [
            (o.shape, o.color, o.size) for o in scene.objects
        ]
        arr = np.asarray(Image.open(io.BytesIO(s["jpeg"])).convert("RGB"), np.float32) / 255
        side = arr.shape[0]
        for r in regions:
            x0, y0, x1, y1 = (v * side for v in r["box"])
            inside = arr[int(y0) : int(y1), int(x0) : int(x1)]
            rgb = np.array(lx.COLORS[r["color"]], np.float32) / 255
            assert (np.linalg.norm(inside - rgb, axis=-1) < 0.15).sum() >= 3, (s["key"], r)


def test_objects_split_holds_no_held_out_combination():
    cfg = WorldConfig()
    held = set(held_out_combos(cfg))
    for i in range(600):
        assert not {(o.color, o.shape) for o in sample_scene(cfg, "objects", i).objects} & held


def test_label_only_samples_are_counted_skips_when_read_as_pairs(tiny_world):
    stats = ReadStats()
    assert list(iter_samples(tiny_world / "objects", stats=stats)) == []
    assert stats.by_reason() == {"label_only": tiny_world_config().num_objects}
    stats = ReadStats()
    assert list(iter_samples(tiny_world / "val", stats=stats, labelled=True)) == []
    assert stats.by_reason() == {"missing_labels": tiny_world_config().num_val}


@pytest.mark.parametrize(
    "bad",
    [
        {"image_size": 8},
        {"num_web": -1},
        {"num_objects": -1},
        {"web_noise": {"typo": 0.1}},
        {"web_noise": {"spam": 0.7, "mismatched": 0.6}},
        {"shard_size": 0},
    ],
)
def test_bad_world_config_is_rejected(bad):
    with pytest.raises(ValueError):
        WorldConfig(**bad)


def test_relation_labels_name_what_each_object_is_the_subject_of():
    """`relation` (Visual Genome's relationship triples, per subject): for each region box, the
    relations its object holds to some other object, by the same definitions the captions use."""
    from blip_core.data.world.grounding import relation_holds
    from blip_core.data.world.labels import subject_relations

    scene = Scene.from_dict({"background": "plain", "objects": [
        {"shape": "star", "color": "red", "size": "small", "row": 0, "col": 0},
        {"shape": "ring", "color": "blue", "size": "large", "row": 0, "col": 1},
        {"shape": "cross", "color": "red", "size": "large", "row": 2, "col": 1},
    ]})  # fmt: skip
    star, ring, cross = scene.objects
    assert subject_relations(star, scene) == ["left_of", "above", "next_to"]  # left of the ring, above the cross
    assert subject_relations(ring, scene) == ["right_of", "above", "next_to"]
    assert subject_relations(cross, scene) == ["below"]
    assert subject_relations(star, Scene([star], "plain")) == []  # alone: the subject of nothing
    cfg = tiny_world_config(object_labels=["shape", "region", "relation"])
    for i in range(10):
        s = make_sample(cfg, "objects", i)
        scene = Scene.from_dict(s["meta"]["gt"]["scene"])
        labels = s["meta"]["labels"]
        assert len(labels["relation"]) == len(labels["region"]) == len(scene.objects)
        for o, names in zip(scene.objects, labels["relation"], strict=True):
            for r in lx.RELATIONS:
                assert (r in names) == any(relation_holds(o, b, r) for b in scene.objects if b is not o)
    with pytest.raises(ValueError, match="needs 'region'"):
        tiny_world_config(object_labels=["shape", "relation"]).__post_init__()
