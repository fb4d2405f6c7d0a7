"""Parley for Blender: speech audio → facial animation on the active mesh.

Thin by design: this package holds Blender code only. Inference runs in a child process
(``python -m engine animate … --progress json``), so Blender never imports torch and the UI
stays responsive. See ``session.py`` for the flow and ``bake.py`` for what is written into
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
               preferences, properties)

_CLASSES = (*preferences.classes, *properties.classes, *character_props.classes, *operators.classes,
            *operators_strips.classes, *character_ops.classes, *installer.classes, *head.classes, *panel.classes)


def stop_everything() -> None:
    """Kill engine and pip children and remove every timer/status text of a running operator."""
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


def unregister() -> None:
    # Unregistering the operator classes frees their modal handlers without calling cancel():
    # no engine process, timer or status text may outlive the add-on, so stop them first.
    stop_everything()
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    head.unregister_menu()
    character_props.unregister_props()
    properties.unregister_props()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
