"""SoccerNet MVFoul label rules: class lists, the official skip rules, annotation loading.

The rules replicate the official SoccerNet code: ``label2vectormerge`` in the VARS baseline
(sn-mvfoul ``VARS model/data_loader.py``) decides which actions are trained on, and
``SoccerNet.Evaluation.MV_FoulRecognition.evaluate`` decides which are scored; both apply the same
rules (an early version of the loader did not accept the spelling ``"No Offence"``), so we train
on exactly the actions that are scored.

Given an action's ``"Action class"``, ``"Offence"`` and ``"Severity"`` strings, in this order:

1. ``""`` or ``"Dont know"`` action class: skipped (no action label to learn or score).
2. Offence ``""`` or ``"Between"`` and the action is not a ``"Dive"``: skipped (no agreed
   offence decision). For a Dive these are read as ``"Offence"``: the dive (simulation) is
   itself the offence even when the annotator left the offence undecided.
3. Severity ``""``, ``"2.0"`` or ``"4.0"`` on a non-Dive action whose offence is not "No offence":
   skipped ("2.0"/"4.0" are the borderline no-card/yellow and yellow/red grades; an offence with no
   grade or a borderline one has no single card). For a Dive, and for "No offence", these
   severities are read as ``"1.0"``.
4. "No offence" (either spelling) is class 0 whatever its severity; "Offence" with severity
   ``"1.0"``/``"3.0"``/``"5.0"`` is class 1/2/3 (no card / yellow / red).

Strings outside the known values are errors here (``AnnotationError``); the official code would
crash on an unknown action class and silently skip an unknown offence or severity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

ACTION_CLASSES: tuple[str, ...] = (
    "Tackling",
    "Standing tackling",
    "High leg",
    "Holding",
    "Pushing",
    "Elbowing",
    "Challenge",
    "Dive",
)
"""The 8 scored action classes, in the official index order."""

OFFENCE_CLASSES: tuple[str, ...] = (
    "No offence",
    "Offence + No card",
    "Offence + Yellow card",
    "Offence + Red card",
)
"""The 4 offence/severity classes, in the official index order (names as in VARS ``classes.py``)."""

OFFENCE_OUTPUT: tuple[tuple[str, str], ...] = (
    ("No offence", ""),
    ("Offence", "1.0"),
    ("Offence", "3.0"),
    ("Offence", "5.0"),
)
"""``(Offence, Severity)`` strings of each offence/severity class, as VARS writes predictions."""

UNSCORED_ACTION_CLASSES: tuple[str, ...] = ("", "Dont know")
OFFENCE_VALUES: tuple[str, ...] = ("Offence", "No offence", "No Offence", "Between", "")
SEVERITY_VALUES: tuple[str, ...] = ("", "1.0", "2.0", "3.0", "4.0", "5.0")
NO_OFFENCE_VALUES: tuple[str, ...] = ("No offence", "No Offence")
UNGRADED_SEVERITIES: tuple[str, ...] = ("", "2.0", "4.0")
SEVERITY_TO_CLASS: Mapping[str, int] = {"1.0": 1, "3.0": 2, "5.0": 3}
LABEL_FIELDS: tuple[str, ...] = ("Action class", "Offence", "Severity")
_CLIP_NAME = re.compile(r"clip_\d+")


class AnnotationError(ValueError):
    """An annotations or predictions file that does not match the MVFoul format."""


class SkipReason(StrEnum):
    """Why the official rules leave an action out of training and scoring."""

    EMPTY_ACTION = "empty action class"
    DONT_KNOW = "action class 'Dont know'"
    EMPTY_OFFENCE = "empty offence on a non-Dive action"
    BETWEEN = "offence 'Between' on a non-Dive action"
    EMPTY_SEVERITY = "empty severity on an offence"
    BORDERLINE_SEVERITY = "borderline severity '2.0'/'4.0' on an offence"


@dataclass(frozen=True)
class ActionRecord:
    """One scored action: its id (the ``Actions`` key), labels and clip files (one per view).

    ``views`` holds each clip's camera position: its index in the annotation's ``Clips`` list
    (``clip_0`` is the live camera), kept when other clips of the action are left out, so a
    model can tell the cameras apart. Empty means ``0..len(clips)-1``.
    """

    id: str
    action: int
    offence: int
    clips: tuple[Path, ...]
    camera_types: tuple[str, ...] = ()
    views: tuple[int, ...] = ()

    @property
    def positions(self) -> tuple[int, ...]:
        """The camera position of each clip (``views``, or ``0..len(clips)-1``)."""
        return self.views or tuple(range(len(self.clips)))


@dataclass(frozen=True)
class Annotations(Sequence[ActionRecord]):
    """The scored actions of one ``annotations.json`` (a sequence of ``ActionRecord``).

    ``skipped`` maps each ``SkipReason`` to the ids the official rules leave out.
    """

    path: Path
    set_name: str
    records: tuple[ActionRecord, ...]
    skipped: Mapping[SkipReason, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def __iter__(self) -> Iterator[ActionRecord]:
        return iter(self.records)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {str(reason): len(ids) for reason, ids in self.skipped.items()}


def _where(source: str | Path | None, action_id: str | int) -> str:
    prefix = f"{source}: " if source is not None else ""
    return f"{prefix}action {str(action_id)!r}"


def _label_field(action: Mapping[str, Any], name: str, allowed: tuple[str, ...], where: str) -> str:
    if name not in action:
        raise AnnotationError(f"{where}: missing field {name!r}")
    value = action[name]
    if not isinstance(value, str) or value not in allowed:
        raise AnnotationError(
            f"{where}: field {name!r} has unknown value {value!r}; expected one of {list(allowed)}"
        )
    return value


def label_or_skip_reason(
    action: Mapping[str, Any], action_id: str | int, source: str | Path | None = None
) -> tuple[int, int] | SkipReason:
    """``(action index, offence/severity index)`` of one annotated action, or why it is skipped.

    Applies the official rules listed in this module's docstring; raises ``AnnotationError``
    naming ``source``, the action id and the field for a missing field or an unknown string.
    """
    where = _where(source, action_id)
    if not isinstance(action, Mapping):
        raise AnnotationError(f"{where}: expected an object, got {type(action).__name__}")
    action_class = _label_field(
        action, "Action class", ACTION_CLASSES + UNSCORED_ACTION_CLASSES, where
    )
    offence = _label_field(action, "Offence", OFFENCE_VALUES, where)
    severity = _label_field(action, "Severity", SEVERITY_VALUES, where)

    if action_class == "":
        return SkipReason.EMPTY_ACTION
    if action_class == "Dont know":
        return SkipReason.DONT_KNOW
    dive = action_class == "Dive"
    if not dive and offence == "":
        return SkipReason.EMPTY_OFFENCE
    if not dive and offence == "Between":
        return SkipReason.BETWEEN
    no_offence = offence in NO_OFFENCE_VALUES
    if not dive and not no_offence and severity == "":
        return SkipReason.EMPTY_SEVERITY
    if not dive and not no_offence and severity in UNGRADED_SEVERITIES:
        return SkipReason.BORDERLINE_SEVERITY

    if no_offence:
        offence_class = 0
    else:
        graded = "1.0" if severity in UNGRADED_SEVERITIES else severity
        offence_class = SEVERITY_TO_CLASS[graded]
    return ACTION_CLASSES.index(action_class), offence_class


def parse_label(
    action: Mapping[str, Any], action_id: str | int, source: str | Path | None = None
) -> tuple[int, int] | None:
    """``(action index, offence/severity index)``, or ``None`` for an action the rules skip."""
    label = label_or_skip_reason(action, action_id, source)
    return None if isinstance(label, SkipReason) else label


def clip_file_name(clip: Any, index: int, where: str) -> str:
    """The file name (``clip_<k>.mp4``) of one ``Clips`` entry.

    Real ``Url`` values look like ``"Dataset/Train/action_0/clip_0"``: the last component names the
    file inside the action folder. An entry without a usable ``Url`` falls back to its position,
    as the official loader (which only looks at ``clip_<k>.mp4`` files) does.
    """
    if not isinstance(clip, Mapping):
        raise AnnotationError(f"{where}: Clips[{index}] must be an object, got {clip!r}")
    url = clip.get("Url")
    if isinstance(url, str):
        name = PurePosixPath(url.replace("\\", "/")).name
        stem = name.removesuffix(".mp4")
        if _CLIP_NAME.fullmatch(stem):
            return f"{stem}.mp4"
    return f"clip_{index}.mp4"


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, raising ``AnnotationError`` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object at top level")
    if not isinstance(data.get("Actions"), dict):
        raise AnnotationError(f"{path}: missing field 'Actions' (an object of id -> action)")
    return data


def load_annotations(path: str | Path) -> Annotations:
    """Load ``<split>/annotations.json``: scored actions with clip paths, skipped ids by reason.

    Clip paths are ``<split>/action_<id>/clip_<k>.mp4`` beside the annotations file, one per
    ``Clips`` entry; whether they exist is the dataset's concern.
    """
    path = Path(path)
    data = read_json(path)
    split_dir = path.parent
    records: list[ActionRecord] = []
    skipped: dict[SkipReason, list[str]] = {}
    for action_id, action in data["Actions"].items():
        label = label_or_skip_reason(action, action_id, path)
        if isinstance(label, SkipReason):
            skipped.setdefault(label, []).append(action_id)
            continue
        where = _where(path, action_id)
        clips = action.get("Clips")
        if not isinstance(clips, list) or not clips:
            raise AnnotationError(f"{where}: field 'Clips' must be a non-empty list, got {clips!r}")
        folder = split_dir / f"action_{action_id}"
        records.append(
            ActionRecord(
                id=action_id,
                action=label[0],
                offence=label[1],
                clips=tuple(folder / clip_file_name(c, k, where) for k, c in enumerate(clips)),
                camera_types=tuple(str(c.get("Camera type", "")) for c in clips),
            )
        )
    return Annotations(
        path=path,
        set_name=str(data.get("Set", "")),
        records=tuple(records),
        skipped={reason: tuple(ids) for reason, ids in skipped.items()},
    )
