import io
import json

import numpy as np
from PIL import Image

from ovss_common import protocol
from ovss_common.outputs import read_label_map
from ovss_common.server import Method, Segmentation, serve


class Halves(Method):
    """Left half class 0, right half class 1 (or "no class" with a single name)."""

    name = "halves"

    def load(self, request):
        if request.options.get("fail"):
            raise protocol.WorkerError("bad_checkpoint", "broken checkpoint", request.weights)
        return {"package_version": "0", "config_sha256": None, "weights_sha256": None}

    def segment(self, image, request):
        if request.vocabulary == ["explode"]:
            raise RuntimeError("boom")
        height, width = image.height, image.width
        labels = np.zeros((height, width), np.int64)
        labels[:, width // 2 :] = 1 if len(request.vocabulary) > 1 else protocol.NO_CLASS
        scores = np.stack(
            [(labels == c).astype(np.float32) for c in range(len(request.vocabulary))]
        )
        return Segmentation(labels, list(request.vocabulary), scores, {"model": 0.0})


def _talk(messages):
    lines = "".join(m if isinstance(m, str) else protocol.encode(m) for m in messages)
    output = io.StringIO()
    serve(Halves(), io.StringIO(lines), output)
    return [json.loads(line) for line in output.getvalue().splitlines()]


def _image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(path)
    return str(path)


def test_load_segment_shutdown(tmp_path):
    image = _image(tmp_path)
    prefix = str(tmp_path / "out" / "img")
    replies = _talk(
        [
            protocol.request("load", 1, device="cpu"),
            protocol.request(
                "segment",
                2,
                image=image,
                vocabulary=["a", "b"],
                output_prefix=prefix,
                save_scores=True,
            ),
            protocol.request("shutdown", 3),
            protocol.request("ping", 4),  # never answered: the worker stopped
        ]
    )
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(r["ok"] for r in replies)
    result = replies[1]["result"]
    labels = read_label_map(result["label_map"])
    assert labels.shape == (6, 8) and labels[0, 0] == 0 and labels[0, 7] == 1
    assert np.load(result["scores"])["scores"].shape == (2, 6, 8)
    with open(result["sidecar"]) as file:
        sidecar = json.load(file)
    assert sidecar["vocabulary"] == ["a", "b"] and sidecar["provenance"]["method"] == "halves"
    assert set(sidecar["timing"]) >= {"read", "model", "write", "total"}
    assert sidecar["memory"]["peak_rss_bytes"] > 0


def test_errors_are_structured_and_the_worker_keeps_serving(tmp_path):
    image = _image(tmp_path)
    prefix = str(tmp_path / "img")
    seg = {"image": image, "output_prefix": prefix}
    replies = _talk(
        [
            "this is not json\n",
            protocol.request("segment", 1, vocabulary=["a"], **seg),
            {"protocol_version": 99, "id": 2, "type": "ping"},
            protocol.request("dance", 3),
            protocol.request("load", 4, options={"fail": True}, weights="/w.pth"),
            protocol.request("load", 5),
            protocol.request("segment", 6, vocabulary=[], **seg),
            protocol.request("segment", 7, vocabulary=["a", "a"], **seg),
            protocol.request("segment", 8, vocabulary=["explode"], **seg),
            protocol.request(
                "segment",
                9,
                vocabulary=["a"],
                image=str(tmp_path / "none.png"),
                output_prefix=prefix,
            ),
            protocol.request("segment", 10, vocabulary=["a", "b"], stuff=["c"], **seg),
            protocol.request("segment", 11, vocabulary=["a"], **seg),
        ]
    )
    kinds = [(r["id"], r["ok"] or r["error"]["type"]) for r in replies]
    assert kinds == [
        (None, "bad_request"),
        (1, "not_loaded"),
        (2, "protocol_mismatch"),
        (3, "unknown_request"),
        (4, "bad_checkpoint"),
        (5, True),
        (6, "bad_vocabulary"),
        (7, "bad_vocabulary"),
        (8, "internal"),
        (9, "bad_image"),
        (10, "bad_vocabulary"),
        (11, True),
    ]
    assert replies[4]["error"]["input"] == "/w.pth"
    assert "RuntimeError: boom" in replies[8]["error"]["message"]
    assert read_label_map(replies[-1]["result"]["label_map"])[0, 7] == protocol.NO_CLASS


def test_label_ids_store_the_label_map_once_in_those_ids_with_the_callers_provenance(tmp_path):
    image = _image(tmp_path)
    seg = {"image": image, "save_scores": False}
    record = {"dataset": "mini-voc", "prediction_ids": "dataset ids"}
    replies = _talk(
        [
            protocol.request("load", 1),
            protocol.request(
                "segment",
                2,
                vocabulary=["a", "b"],
                label_ids=[7, 3],
                provenance=record,
                output_prefix=str(tmp_path / "ids"),
                **seg,
            ),
            protocol.request(
                "segment",
                3,
                vocabulary=["a"],
                label_ids=[4],
                unassigned_id=0,
                output_prefix=str(tmp_path / "unassigned"),
                **seg,
            ),
            protocol.request(
                "segment",
                4,
                vocabulary=["a"],
                label_ids=[4],
                output_prefix=str(tmp_path / "kept"),
                **seg,
            ),
            protocol.request(
                "segment", 5, vocabulary=["a", "b"], label_ids=[1], output_prefix="x", **seg
            ),
            protocol.request(
                "segment", 6, vocabulary=["a"], label_ids=[70000], output_prefix="x", **seg
            ),
        ]
    )
    ids = read_label_map(replies[1]["result"]["label_map"])
    assert ids[0, 0] == 7 and ids[0, 7] == 3
    with open(replies[1]["result"]["sidecar"]) as file:
        sidecar = json.load(file)
    assert sidecar["harness"] == record and sidecar["label_ids"] == [7, 3]
    unassigned = read_label_map(replies[2]["result"]["label_map"])
    assert unassigned[0, 0] == 4 and unassigned[0, 7] == 0
    kept = read_label_map(replies[3]["result"]["label_map"])
    assert kept[0, 0] == 4 and kept[0, 7] == protocol.NO_CLASS
    assert [r["error"]["input"] for r in replies[4:]] == ["label_ids", "label_ids"]
    assert not (tmp_path / "x.png").exists()
