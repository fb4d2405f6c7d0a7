"""Retargeting: any shipped checkpoint's animation on any character (issue 10).

Public API (what the CLI and the Blender add-on call; no ``bpy`` here)::

    from engine.retarget import fit_mesh, load_fit, load_user_mesh, Transfer, solve_weights
    mesh = load_user_mesh("head.obj")
    fit = fit_mesh(mesh, animator.topology, up="y")         # FitError with advice if it is bad
    fit.save("head.fit.npz")
    frames = animator.animate("a.wav")                      # (T, S, 3) on the template
    for chunk in Transfer(fit, animator.topology, None, mesh.vertices).frames(frames, fps):
        ...                                                 # (c, N, 3) on the character

Modules: ``meshin`` (read/check/axes/head), ``landmarks``, ``geometry``, ``nricp``, ``fit``,
``transfer``, ``names`` (shape-key name maps), ``shapekeys`` (weight solve), ``semantics``
(model motion -> ARKit/VRM/Rhubarb without a fit), ``run`` (the CLI flows, also for the add-on's
child process).  Measurements: ``python -m training.retarget_bench``.
"""
from engine.retarget.fit import Fit, FitConfig, FitError, fit_mesh, load_fit
from engine.retarget.landmarks import LandmarkError
from engine.retarget.meshin import MeshInputError, load_user_mesh
from engine.retarget.transfer import Transfer

__all__ = ["Fit", "FitConfig", "FitError", "LandmarkError", "MeshInputError", "Transfer", "fit_mesh", "load_fit",
           "load_user_mesh"]
