import numpy as np
import pytest

from ovss.datasets import get_dataset, label_spaces, register_dataset
from ovss.datasets.mini_voc import STEMS
from ovss.errors import OvssError
from ovss_common.outputs import read_label_map

SIZES = {
    "voc-21": 21,
    "voc-20": 20,
    "pc-59": 59,
    "pc-459": 459,
    "ade20k-150": 150,
    "ade20k-847": 847,
    "coco-stuff-171": 171,
}


@pytest.mark.parametrize("space_name", sorted(SIZES))
def test_native_class_lists_are_one_to_one(space_name):
    space = label_spaces()[space_name]
    assert space.num_classes == SIZES[space_name]
    for method, names in space.method_names.items():
        assert len(names) == space.num_classes, method
        vocabulary, ids = space.vocabulary(method)
        assert len(set(vocabulary)) == len(vocabulary), method
        assert len(set(ids.tolist())) == len(ids), method
        assert all(names[i].strip() == name for name, i in zip(vocabulary, ids, strict=True))


def test_method_specific_names():
    voc20 = label_spaces()["voc-20"]
    assert voc20.vocabulary("san")[0][-1] == "tv"
    assert voc20.vocabulary("ovseg")[0][-1] == "tvmonitor"
    assert voc20.vocabulary("car")[0][2] == "bird avian"
    pc59 = label_spaces()["pc-59"]
    assert pc59.names_for("san")[pc59.names_for("ovseg").index("table")] == "diningtable"
    ade = label_spaces()["ade20k-150"]
    assert "window" in ade.vocabulary("san")[0]  # upstream "window " is stripped before sending
    assert ade.stuff_names("car") and "sky" in ade.stuff_names("car")


def test_voc20_view_of_voc21_ground_truth():
    voc20 = label_spaces()["voc-20"]
    raw = np.array([[0, 1, 20, 255]])
    assert voc20.convert_gt(raw).tolist() == [[255, 0, 19, 255]]
    voc21 = label_spaces()["voc-21"]
    assert voc21.convert_gt(raw).tolist() == raw.tolist()


def test_unassigned_pixels_follow_the_label_space():
    names, ids = label_spaces()["voc-21"].vocabulary("car")
    assert ids[0] == 1 and ids[19] == 20 and len(names) == 20  # CaR names no background
    assert label_spaces()["voc-21"].unassigned == 0  # CaR: unassigned = background
    _, ids = label_spaces()["voc-20"].vocabulary("san")
    assert ids.tolist() == list(range(20)) and label_spaces()["voc-20"].unassigned is None


def test_mini_voc_is_built_from_the_registry_packages():
    dataset = get_dataset("mini-voc")
    samples = dataset.samples()
    assert [s.stem for s in samples] == list(STEMS)
    values = set()
    for sample in samples:
        values |= set(np.unique(read_label_map(sample.label)).tolist())
    assert {0, 255} <= values and values <= set(range(21)) | {255}
    assert dataset.space_for({"mini-voc": "voc-20"}).name == "voc-20"
    assert dataset.space_for({"voc-20": "voc-21"}).name == "voc-21"
    assert dataset.space_for().name == "voc-21"
    assert dataset.space_for({"mini-voc": "voc-20"}, override="pc-59").name == "pc-59"


def test_missing_dataset_names_the_path_and_how_to_prepare():
    with pytest.raises(OvssError, match=r"ADEChallengeData2016.* is missing; download"):
        get_dataset("ade20k-150").samples()


def test_unknown_dataset():
    with pytest.raises(OvssError, match="unknown dataset 'nope'"):
        get_dataset("nope")


def test_register_a_user_dataset(tmp_path):
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.jpg")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(labels / "a.png")
    register_dataset("mine", images, labels, ["road", "car"], 255)
    dataset = get_dataset("mine")
    assert [s.stem for s in dataset.samples()] == ["a"]
    assert dataset.space_for({"mine": "voc-20"}).vocabulary("san")[0] == ["road", "car"]
    with pytest.raises(OvssError, match="built-in"):
        register_dataset("voc-20", images, labels, ["a"], 255)
