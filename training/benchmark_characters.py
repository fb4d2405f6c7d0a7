"""The benchmark's ``characters`` set: each method's animation carried onto heads it was not made for.

An animator's path does not end on Parley's template: ``Animator.animate`` → fit the user's head
once → :class:`engine.retarget.transfer.Transfer` (vertex animation) or the shape-key solve of
:func:`engine.retarget.run.animate_shapes`.  This set runs exactly that on the test characters of
:mod:`training.characters` (other vertex order and sampling, centimetres + Y-up, a stylised head
modelled with the lips apart, no mouth interior, a head on a torso, an ARKit-keyed and a
Rhubarb-keyed rig) for the tongue-twister clips of the ``bilabial`` set.

Ground truth on a character is the clip's template ground truth projected onto the character's
vertices through the points they were cut from (:meth:`training.characters.Character.project`),
which needs no fit.  Per (method, character), over all clips:

* ``lve_l2`` -- Wu et al.'s lip error (max over the character's lip vertices per frame, mean
  over frames), in mm after undoing the character's units, and ``lip_mean`` (mean over lip
  vertices and frames): the max follows the worst vertex, e.g. a mouth-corner vertex the fit
  gave to the wrong lip, the mean the lips as a whole;
* ``closure_mid`` / ``closure_any`` -- /p b m/ whose inner-lip gap *on the character* (the fit's
  own contact rows, as the retarget uses them) is below 0.5 % of the character's face diagonal
  at the phone's midpoint / on some frame inside it.  This is what the animator sees on their
  head; the projected ground truth does not close on a head modelled with the lips apart, the
  retarget's contact term does, so ``ground_truth_retargeted`` (the ground-truth template
  animation through the same retarget) is the row to read the methods against;
* ``aperture_corr`` against the projected ground truth's gap, ``open_gap_ratio`` (median gap at
  open vowels / the projected ground truth's);
* ``retarget_rtf`` -- seconds of retarget per second of audio (the one-off fit excluded).
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VERTEX_CHARACTERS = ("remeshed", "cm_yup", "stylised", "no_interior", "body")
SHAPE_CHARACTERS = ("arkit", "rhubarb")
CHARACTER_COLUMNS = [
    ("lve_l2", "LVE l2 mm"), ("lip_mean", "lip mean mm"), ("closure_mid", "closure mid"), ("closure_any", "closure any"),
    ("aperture_corr", "aperture r"), ("open_gap_ratio", "open gap / gt"), ("retarget_rtf", "retarget s / audio s"),
]


@dataclass
class Target:
    """One fitted character and how to carry template frames onto it."""
    name: str
    character: Any
    fit: Any
    carry: Callable[[np.ndarray], np.ndarray]     # (T, S, 3) template frames -> (T, N, 3) character frames
    lips: np.ndarray                              # character vertices cut from the template's lip region
    face: np.ndarray                              # character face vertices (for the closure threshold)
    fit_seconds: float


def prepare(name: str, topology: Any, fps: float, workdir: Path, cell: float = 0.003) -> Target:
    """Build ``name``, fit it as ``python -m engine retarget`` does (``--up auto``) and return how to
    animate it."""
    from engine.retarget.meshin import check_mesh
    from engine.retarget.run import animate_shapes, animate_vertices, fit_or_load
    from training.characters import build

    ch = build(name, cell)
    mesh = check_mesh(ch.vertices, ch.faces, name)
    t0 = time.perf_counter()
    fit = fit_or_load(mesh, topology, up="auto")
    fit_s = time.perf_counter() - t0
    if name in SHAPE_CHARACTERS:
        path = workdir / f"{name}_shapes.npz"
        np.savez(path, Basis=ch.vertices, **ch.shapes)
        deltas = np.stack([ch.shapes[k] - ch.vertices for k in ch.shapes])
        order = list(ch.shapes)

        def carry(frames: np.ndarray) -> np.ndarray:
            res = animate_shapes(frames, fps, topology, str(path), mesh, lambda: fit, mode="auto")
            W = np.zeros((len(frames), len(order)), np.float64)
            for j, k in enumerate(res["names"]):
                W[:, order.index(k)] = res["weights"][:, j]
            return ch.vertices[None] + np.einsum("tk,knc->tnc", W, deltas)
    else:
        def carry(frames: np.ndarray) -> np.ndarray:
            out = np.empty((len(frames), len(ch.vertices), 3), np.float32)
            animate_vertices(fit, topology, mesh, frames, fps, out)
            return out
    lips_t = np.zeros(len(topology.vertices), bool)
    lips_t[np.asarray(topology.masks["lips"])] = True
    on = np.nonzero(ch.gt_face >= 0)[0]
    lips = on[lips_t[ch.source_faces[ch.gt_face[on]]].any(1)]
    face = fit.head_index[fit.weight > 0.5]
    return Target(name, ch, fit, carry, lips, face, fit_s)


def score(pred: np.ndarray, gt: np.ndarray, tgt: Target, phones: list, fps: float) -> tuple[dict, dict]:
    """(per-clip values, per-phone arrays) of character frames ``pred`` against ``gt``, in metres."""
    from engine import metrics as M

    unit = float(tgt.character.unit_scale)
    t = min(len(pred), len(gt))
    p, g = np.asarray(pred[:t], np.float64) / unit, np.asarray(gt[:t], np.float64) / unit
    err = np.linalg.norm(p[:, tgt.lips] - g[:, tgt.lips], axis=-1)
    up, lo = tgt.fit.lip_upper, tgt.fit.lip_lower
    gp, gg = M.inner_lip_gap(p, up, lo), M.inner_lip_gap(g, up, lo)
    r = float(np.corrcoef(gp, gg)[0, 1]) if gp.std() > 1e-12 and gg.std() > 1e-12 else float("nan")
    mid, anyw = M.bilabial_gap_per_phone(p, phones, fps, up, lo)
    thr = M.default_closure_threshold(tgt.character.vertices / unit, tgt.face)
    return ({"lve_l2": float(err.max(1).mean()), "lip_mean": float(err.mean()), "aperture_corr": r},
            {"mid": mid, "any": anyw, "thr": np.full(len(mid), thr),
             "open": M.open_vowel_gap_per_phone(p, phones, fps, up, lo),
             "open_gt": M.open_vowel_gap_per_phone(g, phones, fps, up, lo)})


def _aggregate(clips: list[dict], phones: list[dict], seconds: float, audio: float) -> dict:
    out: dict = {"clips": len(clips)}
    for k in ("lve_l2", "lip_mean", "aperture_corr"):
        v = [c[k] for c in clips if np.isfinite(c[k])]
        out[k] = float(np.mean(v)) if v else float("nan")
    cat = {k: np.concatenate([p[k] for p in phones]) for k in phones[0]}
    if len(cat["mid"]):
        out["closure_mid"] = float((cat["mid"] < cat["thr"]).mean())
        out["closure_any"] = float((cat["any"] < cat["thr"]).mean())
        out["n_bilabial"] = len(cat["mid"])
    if len(cat["open"]):
        g = float(np.median(cat["open_gt"]))
        out["open_gap_ratio"] = float(np.median(cat["open"]) / g) if g > 0 else float("nan")
    out["retarget_rtf"] = seconds / max(audio, 1e-9)
    return out


def run_characters(clips: list, methods: list, topology: Any, fps: float, log: Callable[[str], None],
                   names: tuple[str, ...] = VERTEX_CHARACTERS + SHAPE_CHARACTERS, cell: float = 0.003) -> dict:
    """Rows ``"<method> → <character>"`` (plus ``ground_truth_retargeted``) for the benchmark report.
    ``methods`` are :class:`training.benchmark.Method`; each predicts once per clip, on the template."""
    with tempfile.TemporaryDirectory(prefix="parley_chars_") as td:
        targets = []
        for n in names:
            targets.append(prepare(n, topology, fps, Path(td), cell))
            log(f"characters: fitted {n} in {targets[-1].fit_seconds:.1f} s")
        sources = [("ground_truth_retargeted", lambda c: c.gt)] + [(m.name, m.predict) for m in methods]
        acc: dict[tuple[str, str], list] = {(s, t.name): [[], [], 0.0, 0.0] for s, _ in sources for t in targets}
        for i, c in enumerate(clips):
            secs = len(c.gt) / fps
            frames = {}
            for m in [None] + methods:   # in order: a post-processing row reads its model's frames from the cache
                s, fn = sources[0] if m is None else (m.name, m.predict)
                frames[s] = np.asarray(fn(c))
                if m is not None:
                    m.cache[c.name] = frames[s]
            for t in targets:
                gt = t.character.project(c.gt, c.template)
                for s, f in frames.items():
                    t0 = time.perf_counter()
                    out = t.carry(f)
                    a = acc[(s, t.name)]
                    a[2] += time.perf_counter() - t0
                    a[3] += secs
                    per_clip, per_phone = score(out, gt, t, c.phones, fps)
                    a[0].append(per_clip)
                    a[1].append(per_phone)
            for m in methods:
                m.cache.pop(c.name, None)
            log(f"characters: {i + 1}/{len(clips)} {c.name}")
    rows = {f"{s} → {t}": _aggregate(*v) for (s, t), v in acc.items()}
    return {"set": "characters", "clips": len(clips), "audio_seconds": round(sum(len(c.gt) for c in clips) / fps, 2),
            "characters": list(names), "fit_seconds": {t.name: round(t.fit_seconds, 2) for t in targets},
            "columns": [k for k, _ in CHARACTER_COLUMNS], "rows": rows}
