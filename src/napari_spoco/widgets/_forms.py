"""Settings boxes built with magicgui from the core's one list of settings (``core/settings.py``).

A box takes its label, range, step and tooltip from a :class:`~napari_spoco.core.settings.Setting`
and its value from a config object, so that the panel shows what the core and the
command line use.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import FloatSpinBox, SpinBox, create_widget

from ..core.settings import Setting, config_value

__all__ = ["setting_box", "values_of"]

SettingBox = SpinBox | FloatSpinBox


def _places(number: float) -> int:
    """Decimal places ``number`` needs to be shown exactly (at most 6)."""
    text = f"{number:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def setting_box(setting: Setting, value: Any) -> SettingBox:
    """Make a spin box over ``setting``'s range that shows ``value`` (None: its special text)."""
    integer = all(isinstance(n, int) for n in (setting.low, setting.high, setting.step))
    # magicgui's SpinBox (superqt's QLargeIntSpinBox) does not show a special value's
    # text ("auto"), so an integer setting that has one is a float box without decimals.
    kind = "SpinBox" if integer and setting.special is None else "FloatSpinBox"
    options = {"min": setting.low, "max": setting.high, "tooltip": setting.tooltip}
    box = create_widget(widget_type=kind, label=setting.label, options=options)
    if kind == "FloatSpinBox":
        numbers = (setting.low, setting.high, setting.step, value or 0)
        decimals = setting.decimals or max(3, *map(_places, numbers))
        box.native.setDecimals(0 if integer else decimals)
    box.step = setting.step  # after the decimals, which magicgui would raise to fit the step
    if setting.special is not None:
        box.native.setSpecialValueText(setting.special)
    box.value = setting.low if value is None else value
    return box


def values_of(boxes: dict[str, SettingBox], settings: dict[str, Setting]) -> dict[str, Any]:
    """Read each box for the config, by setting name: None at a special value, ints kept."""
    return {name: config_value(settings[name], box.value) for name, box in boxes.items()}
