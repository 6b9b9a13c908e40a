"""The settings that made a folder of outputs, recorded beside them and compared on every rerun.

``<dir>/settings.json`` holds ``{"stage": ..., "settings": {...}}``: only what determines the
outputs (a recipe, model sources, sizes, seeds), never what does not (``--overwrite``,
``--device`` for bit-exact CPU work, progress bars). A stage that writes into a folder calls
``check_settings`` first: no record and no files -> a new folder; the same settings -> resume;
other settings -> a ``SettingsMismatchError`` listing each differing setting and the ways on.
A stage that reads a folder calls ``require_settings`` with the settings it needs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils import layout
from utils.io import jsonable, write_json


class SettingsMismatchError(ValueError):
    """A folder's outputs were made with other settings than the ones asked for (or have no record)."""


def read_settings(directory: str | Path) -> dict[str, Any] | None:
    """The recorded ``{"stage", "settings"}`` of a folder (None when it has no record)."""
    path = layout.settings_path(directory)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it and rerun the stage with --overwrite.") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ValueError(f"{path}: expected {{'stage': ..., 'settings': {{...}}}}, found {str(record)[:80]!r}.")
    return record


def write_settings(directory: str | Path, stage: str, settings: dict[str, Any]) -> Path:
    """Record the settings of a folder's outputs (atomically)."""
    path = layout.settings_path(directory)
    write_json(path, {"stage": stage, "settings": jsonable(settings)})
    return path


def differences(saved: dict[str, Any], current: dict[str, Any], keys: list[str] | None = None) -> list[str]:
    """``"name: recorded X, asked Y"`` for every setting (of ``keys``, default all) that differs."""
    current = jsonable(current)
    names = sorted(set(saved) | set(current)) if keys is None else keys
    return [f"{k}: recorded {saved.get(k)!r}, asked {current.get(k)!r}" for k in names if saved.get(k) != current.get(k)]


def check_settings(directory: str | Path, stage: str, settings: dict[str, Any], has_outputs: bool, ways_on: str) -> None:
    """Before writing into ``directory``: refuse outputs made with other settings, or outputs without a record.

    has_outputs: the folder already holds outputs of this stage. ways_on: what the user can do
    instead, e.g. "pass --overwrite to redo them, or write elsewhere with --data-root".
    A folder with no record and no outputs is new: its record is written by the caller.
    """
    record = read_settings(directory)
    if record is None:
        if has_outputs:
            raise SettingsMismatchError(
                f"{directory} holds outputs without a record of the settings that made them ({layout.settings_path(directory).name} "
                f"is missing): {ways_on}."
            )
        return
    diffs = differences(record["settings"], settings)
    if diffs:
        raise SettingsMismatchError(f"{directory} was made with other settings ({'; '.join(diffs)}): {ways_on}.")


def require_settings(directory: str | Path, expected: dict[str, Any], what: str, how: str) -> dict[str, Any]:
    """Before reading ``directory``: its recorded settings, checked against ``expected`` (a subset).

    what: the outputs, for the message ("z_zeroscope targets"); how: how to make or adopt them.
    """
    record = read_settings(directory)
    if record is None:
        raise SettingsMismatchError(f"{directory} ({what}) has no record of the settings that made it: {how}.")
    diffs = differences(record["settings"], expected, keys=list(expected))
    if diffs:
        raise SettingsMismatchError(f"{directory} ({what}) was made with other settings ({'; '.join(diffs)}): {how}.")
    return record["settings"]
