"""Shared, cached set-up for the retarget tests (fits are the slow part: a few seconds each)."""
from __future__ import annotations

from functools import cache

import numpy as np

from engine.retarget.fit import fit_mesh
from engine.retarget.meshin import check_mesh
from engine.topology import Topology
from training.characters import build, rig_speech

CELL = 0.004   # remesh voxel: ~6k-vertex characters keep the tests fast


@cache
def template() -> Topology:
    return Topology.load("engine/assets/default_head.obj")


@cache
def character(name: str):
    return build(name, CELL)


@cache
def fitted(name: str):
    c = character(name)
    return fit_mesh(check_mesh(c.vertices, c.faces, name), template(), up=c.up)


@cache
def speech():
    frames, phones, rest = rig_speech(30.0)
    return frames, phones, rest


def source_side(c) -> np.ndarray:
    """Ground-truth lip side (+1 upper, -1 lower, 0 elsewhere) of each character vertex, from the
    SynthTalk head it was cut from."""
    from training.synthtalk.head import build_head, identity
    head = build_head(identity(c.identity))
    ms = head.info["mouth_side"][c.source_faces[c.gt_face]]
    return np.sign(ms.sum(1))
