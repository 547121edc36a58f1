"""Label spaces: the ids a ground truth is scored in, and each method's names for them.

A label space reads one class list of ``ovss_common.class_lists`` (``names[i]`` = class of dataset id ``i``,
``methods[m][i]`` = the name method ``m`` uses for it, ``null`` where it has none) and may
derive a view of it: ``voc-20`` is ``voc-21`` without background (ground-truth 0 becomes
ignore, ids shift down by one), which is how SAN and OVSeg evaluate VOC.

For an evaluation, a method gets a vocabulary (its names, in id order, without the ids it
does not name) and the dataset id of each name, in which its worker writes the label map.
``unassigned`` says
what a pixel the method leaves without class (65535) means in this space: None keeps it
"no class" (a miss), an id (VOC-21's background 0) assigns it to that class.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ovss.errors import OvssError
from ovss_common.class_lists import class_file


@dataclass(frozen=True)
class LabelSpace:
    """Dataset ids, their class names, and how on-disk ground truth maps into them.

    Attributes:
        name: e.g. ``"voc-20"``.
        class_names: canonical names, index = id.
        method_names: per method, its name for each id (None where it has none).
        ignore_label: the ground-truth value that is not scored.
        unassigned: the id a "no class" prediction counts as, or None (a miss).
        drop_first: the on-disk id 0 is dropped (becomes ignore) and the rest shift down.
        stuff_ids: the stuff ids of the dataset's thing/stuff split, when it has one.
    """

    name: str
    class_names: list[str]
    method_names: dict[str, list[str | None]]
    ignore_label: int
    unassigned: int | None = None
    drop_first: bool = False
    stuff_ids: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def names_for(self, method: str) -> list[str | None]:
        """The method's name per id; a method without a native list uses the canonical names."""
        return self.method_names.get(method, list(self.class_names))

    def vocabulary(self, method: str) -> tuple[list[str], np.ndarray]:
        """The names sent to ``method`` (stripped, in id order) and each one's dataset id."""
        pairs = [
            (name.strip(), i) for i, name in enumerate(self.names_for(method)) if name is not None
        ]
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise OvssError(f"label space {self.name}: method {method} repeats a class name")
        return names, np.array([i for _, i in pairs], dtype=np.int64)

    def stuff_names(self, method: str) -> list[str] | None:
        """The method's names of the stuff classes, or None when the space has no split."""
        if not self.stuff_ids:
            return None
        names = self.names_for(method)
        return [names[i].strip() for i in self.stuff_ids if names[i] is not None]

    def convert_gt(self, labels: np.ndarray) -> np.ndarray:
        """On-disk ground truth → ids of this space (ignore stays ``ignore_label``)."""
        if not self.drop_first:
            return labels
        converted = labels - 1
        converted[(labels == 0) | (labels == self.ignore_label)] = self.ignore_label
        return converted


def _from_file(
    name: str,
    file: str,
    ignore_label: int,
    *,
    unassigned: int | None = None,
    drop_first: bool = False,
) -> LabelSpace:
    data = class_file(file)
    names = list(data["names"])
    methods = {m: list(v) for m, v in data.get("methods", {}).items()}
    stuff = list(data.get("thing_stuff", {}).get("stuff_ids", []))
    if drop_first:
        names = names[1:]
        methods = {m: v[1:] for m, v in methods.items()}
        stuff = [i - 1 for i in stuff if i > 0]
    return LabelSpace(
        name=name,
        class_names=names,
        method_names=methods,
        ignore_label=ignore_label,
        unassigned=unassigned,
        drop_first=drop_first,
        stuff_ids=stuff,
    )


@functools.cache
def label_spaces() -> dict[str, LabelSpace]:
    """Every built-in label space by name."""
    spaces = [
        _from_file("voc-21", "voc-21", 255, unassigned=0),
        _from_file("voc-20", "voc-21", 255, drop_first=True),
        _from_file("pc-59", "pc-59", 255),
        _from_file("pc-459", "pc-459", 65535),
        _from_file("ade20k-150", "ade20k-150", 255),
        _from_file("ade20k-847", "ade20k-847", 65535),
        _from_file("coco-stuff-171", "coco-stuff-171", 255),
    ]
    return {space.name: space for space in spaces}


def get_label_space(name: str) -> LabelSpace:
    spaces = label_spaces()
    if name not in spaces:
        raise OvssError(f"unknown label space {name!r}; choose one of {', '.join(spaces)}")
    return spaces[name]
