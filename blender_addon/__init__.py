"""Parley for Blender: speech audio → facial animation on the active mesh.

Thin by design: this package holds Blender code only. Inference runs in a child process
(``python -m engine animate … --progress json``), so Blender never imports torch and the UI
stays responsive. See ``session.py`` for the flow and ``bake.py`` for what is written into
the scene.
"""
from __future__ import annotations

bl_info = {  # legacy add-on metadata (Blender < 4.2 / installing from a folder)
    "name": "Parley",
    "author": "Parley contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D Viewport > Sidebar > Parley",
    "description": "Speech-driven 3D facial animation",
    "category": "Animation",
}

import bpy

from . import operators, panel, preferences, properties

_CLASSES = (*preferences.classes, *properties.classes, *operators.classes, *panel.classes)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_props()


def unregister() -> None:
    operators.kill_all()  # no engine process may outlive the add-on
    properties.unregister_props()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
