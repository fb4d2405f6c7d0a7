"""Parley for Blender: speech audio → facial animation on the active mesh.

Thin by design: this package holds Blender code only. Inference runs in a child process
(``python -m engine serve``, kept warm by ``warm_engine.py``; or one ``python -m engine animate``
per run), so Blender never imports torch and the UI stays responsive. See ``session.py`` for the flow and ``bake.py`` for what is written into
the scene. The same sources are a Blender 4.2+ extension and, through ``bl_info``, a legacy
add-on for Blender 3.x (``build_addon.py`` builds both zips).
"""
from __future__ import annotations

bl_info = {  # legacy add-on metadata (Blender 3.x, or installing from a folder)
    "name": "Parley",
    "author": "Parley contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar > Parley",
    "description": "Speech-driven 3D facial animation",
    "category": "Animation",
}

import bpy
from bpy.app.handlers import persistent

from . import (character_ops, character_props, head, installer, modal_ui, operators, operators_strips, panel,
               preferences, properties, warm_engine)

_CLASSES = (*preferences.classes, *properties.classes, *character_props.classes, *operators.classes,
            *operators_strips.classes, *character_ops.classes, *installer.classes, *head.classes, *panel.classes)


def stop_everything() -> None:
    """Stop running engine requests and pip children and remove every timer/status text of a
    running operator. The warm engine itself stays loaded (it belongs to Blender, not to the
    file); ``unregister`` stops it."""
    operators.kill_all()
    operators_strips.kill_all()
    installer.kill_all()
    modal_ui.end_all()


@persistent
def _on_load_pre(*_args: object) -> None:
    # Blender also calls the modal operators' cancel() when a file is loaded; this is the
    # safety net for anything else still running (it is idempotent with cancel()).
    stop_everything()


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_props()
    character_props.register_props()
    head.register_menu()
    bpy.app.handlers.load_pre.append(_on_load_pre)
    if not bpy.app.background:
        bpy.app.timers.register(_start_engine_if_wanted, first_interval=1.0)


def _start_engine_if_wanted() -> None:
    """Preference "Start it when the add-on is enabled": start the warm engine in the background
    (a one-shot timer, once the preferences are readable; ``Popen`` does not wait for the model)."""
    prefs = preferences.get_prefs()
    if prefs is None or not preferences.warm(prefs) or not getattr(prefs, "start_engine_on_enable", False):
        return None
    try:
        operators.start_warm_engine(bpy.context)
    except Exception as exc:  # noqa: BLE001 - Blender must start whatever the engine does
        print(f"Parley: could not start the engine: {exc}")
    return None


def unregister() -> None:
    # Unregistering the operator classes frees their modal handlers without calling cancel():
    # no engine process, timer or status text may outlive the add-on, so stop them first.
    stop_everything()
    warm_engine.shutdown()
    if bpy.app.timers.is_registered(_start_engine_if_wanted):
        bpy.app.timers.unregister(_start_engine_if_wanted)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    head.unregister_menu()
    character_props.unregister_props()
    properties.unregister_props()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
