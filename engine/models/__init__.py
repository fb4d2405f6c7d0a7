"""Talking-face models, one file per method, all implementing :class:`engine.models.base.TalkingFaceModel`.

* ``composite_regional`` -- Wu et al., MM 2023 (the default model);
* :mod:`engine.models.windowing` -- runs any of them over audio of any length.

A checkpoint names its kind; :func:`engine.checkpoint.build_model` imports ``engine.models.<kind>``
on demand, so this package imports nothing eagerly (importing the engine stays cheap).
"""
