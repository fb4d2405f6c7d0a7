"""Transfer: the template's per-frame motion carried onto a fitted character's own vertices.

For a character vertex ``c`` matched to template triangle ``(a, b, e)`` with barycentrics ``beta``::

    d_c(t) = w_c * s * l_c * R (sum_k beta_k (F_k(t) - F_k(rest)))          (1)

``s`` the fit's scale (template units -> the character's), ``R`` its rotation (template axes ->
the file's axes), ``l_c`` the local scale of the fitted face around ``c`` (bigger lips move
more), ``w_c`` the motion weight (1 on the face, a soft border, 0 beyond: the skull, the body,
hair and anything far from the fitted face never move).

**Contact** (the issue's "a character modelled with lips apart or pressed must still meet at
/p b m/").  The template lips touch both in silence and at bilabials, so the gap alone cannot
tell them apart; speech can: a gate ``kappa(t)`` is 1 when the template's inner-lip gap is
below the closure threshold (as :func:`engine.metrics.bilabial_closure_rate` counts it) *and*
the mouth opens within +-0.3 s (the closure is part of speech), 0 otherwise.  Where the gate is
on, each of the character's own contact pairs ``(u_i, l_i)`` is moved so its gap becomes the
template's gap scaled by the ratio of the two faces' closure thresholds (0.5% of each face's
bounding-box diagonal, as :func:`engine.metrics.default_closure_threshold`), ``g_i(t) = s_f R G_j(t)``::

    c_i(t) = g_now - blend(g_now, s_f R G_j(t), kappa(t)),   g_now = (x_ui + d_ui) - (x_li + d_li)   (2)

``blend`` mixes the two gap vectors linearly but rescales the mix to the linear mix of their
lengths (so a half-on gate never closes the lips further than either end would); the
upper lip takes 35% of the correction and the lower lip 65% (as the SynthTalk rig's
``lips_close``), spread over each lip with a Gaussian falloff from its row.  In silence the gate
is off, so the character's rest pose (lips apart, pressed or anything) is untouched.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import maximum_filter1d
from scipy.spatial import cKDTree

from engine.retarget.fit import LOWER_LIP_SHARE, Fit

__all__ = ["Transfer", "contact_gate"]


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def contact_gate(template_gap: np.ndarray, threshold: float, fps: float, window_s: float = 0.3) -> np.ndarray:
    """``kappa(t)`` of eq. (2): lips in contact (gap below ``threshold``, fully on below it, off
    at 1.2x) during speech (the gap exceeds 2x the threshold somewhere within +-``window_s``)."""
    g = np.asarray(template_gap, np.float64)
    closed = 1.0 - _smoothstep(g, threshold, 1.2 * threshold)
    size = 2 * round(window_s * fps) + 1
    opened = maximum_filter1d(g, size=size, mode="nearest")
    active = _smoothstep(opened, 1.5 * threshold, 3.0 * threshold)
    return closed * active


class Transfer:
    """Eq. (1)-(2) for one fit and one template topology; call :meth:`frames` per clip."""

    def __init__(self, fit: Fit, topology: Any, rest_vertices: np.ndarray, user_vertices: np.ndarray) -> None:
        from engine.metrics import default_closure_threshold

        self.fit = fit
        self.rest_t = np.asarray(topology.vertices if rest_vertices is None else rest_vertices, np.float32)
        self.user = np.asarray(user_vertices, np.float32)
        head = fit.head_index
        S = len(self.rest_t)
        tf = topology.faces[fit.c2t_face]                        # (H, 3)
        s = float(fit.scale)
        coef = fit.c2t_bary * (fit.weight * fit.local_scale * s)[:, None]
        rows = np.repeat(head, 3)       # rows of vertices outside the head stay empty: they never move
        self.M = sp.csr_matrix((coef.reshape(-1).astype(np.float32), (rows, tf.reshape(-1))),
                               shape=(len(user_vertices), S))
        self.R = np.asarray(fit.rotation, np.float32)
        self.head = head
        m = topology.masks
        self.up_t, self.lo_t = m["lip_upper_inner"], m["lip_lower_inner"]
        self.pair_t = fit.lip_pair_template
        self.threshold = default_closure_threshold(topology.vertices, m.get("face"))
        # contact rows and their falloff over each lip
        self.up_c, self.lo_c = fit.lip_upper, fit.lip_lower
        pos_in_head = -np.ones(len(user_vertices), np.int64)
        pos_in_head[head] = np.arange(len(head))
        # contact gaps scale with the face: closed on the template (gap below 0.5% of its face
        # diagonal) <=> closed on the character (below 0.5% of the character's face diagonal)
        face_c = head[fit.weight > 0.5]
        thr_c = default_closure_threshold(self.user, face_c) if len(face_c) else s * self.threshold
        row_scale = np.full(len(self.up_c), thr_c / self.threshold)
        self.row_scale = row_scale.astype(np.float32)
        hw = float(fit.meta.get("mouth_halfwidth", 0.0)) or 0.5 * float(np.ptp(self.user[self.up_c][:, 0]))
        sigma = 0.35 * max(hw, 1e-12)
        Vh = self.user[head]
        side = fit.user_side
        mats = []
        for sgn, rows_c in ((1, self.up_c), (-1, self.lo_c)):
            # a row vertex shared by several pairs (coarse meshes) takes the mean of their corrections
            tree = cKDTree(self.user[rows_c])
            d, j = tree.query(Vh)
            w = np.exp(-(d / sigma) ** 2) * (side == sgn) * (d < 3 * sigma)
            nz = np.nonzero(w > 1e-4)[0]
            r, cidx, val = list(nz), list(j[nz]), list(w[nz])
            is_row = np.isin(np.arange(len(head)), pos_in_head[rows_c])
            keep = [k for k in range(len(r)) if not is_row[r[k]]]
            r, cidx, val = [r[k] for k in keep], [cidx[k] for k in keep], [val[k] for k in keep]
            hrow = pos_in_head[rows_c]
            counts = {h: int((hrow == h).sum()) for h in np.unique(hrow)}
            for i, h in enumerate(hrow):
                r.append(h)
                cidx.append(i)
                val.append(1.0 / counts[h])
            mats.append(sp.csr_matrix((np.asarray(val, np.float32), (head[np.asarray(r)], np.asarray(cidx))),
                                      shape=(len(user_vertices), len(rows_c))))
        self.W_up, self.W_lo = mats

    def template_gap(self, frames: np.ndarray) -> np.ndarray:
        """The template's inner-lip gap per frame (engine.metrics definition), reading only the rows."""
        from engine.metrics import inner_lip_gap
        F = np.asarray(frames)
        rows = np.concatenate([self.up_t, self.lo_t])
        n = len(self.up_t)
        return inner_lip_gap(F[:, rows], np.arange(n), np.arange(n, 2 * n))

    def frames(self, frames: np.ndarray, fps: float, chunk: int = 256, contact: bool = True) -> Iterator[np.ndarray]:
        """Yield the character's vertex positions ``(c, N, 3)`` float32, ``chunk`` frames at a time,
        for template frames ``(T, S, 3)``."""
        F = np.asarray(frames)
        T = len(F)
        kappa = contact_gate(self.template_gap(F), self.threshold, fps) if contact else np.zeros(T)
        for t0 in range(0, T, chunk):
            yield self._chunk(F[t0:t0 + chunk], kappa[t0:t0 + chunk])

    def displacements(self, frames: np.ndarray, kappa: np.ndarray) -> np.ndarray:
        """``(c, N, 3)`` displacements of every character vertex (eq. 1 + 2), file axes and units
        (zero outside the head)."""
        return self._chunk(frames, kappa) - self.user[None]

    def _chunk(self, F: np.ndarray, kappa: np.ndarray) -> np.ndarray:
        F = np.asarray(F, np.float32)
        c, S = len(F), len(self.rest_t)
        # rotate on the (small) template side, as one (c*S, 3) @ (3, 3) GEMM
        Fr = ((F - self.rest_t[None]).reshape(-1, 3) @ self.R.T).reshape(c, S, 3)
        out = np.empty((c, len(self.user), 3), np.float32)
        need = kappa > 0
        if np.any(need):
            Gall = F[:, self.up_t] - F[:, self.lo_t]                                    # (c, P_t, 3)
            G = Gall[:, self.pair_t] @ self.R.T * self.row_scale[None, :, None]
            # the character has its own (often fewer) pairs: rescale so the median gap over its
            # pairs equals the template's median over all of its pairs (the metric's statistic)
            med_all = np.median(np.linalg.norm(Gall, axis=2), axis=1)
            med_sub = np.median(np.linalg.norm(Gall[:, self.pair_t], axis=2), axis=1)
            G *= (med_all / np.maximum(med_sub, 1e-12))[:, None, None]
        for k in range(c):                       # per frame: (N, S) sparse @ (S, 3), no transposed copies
            d = self.M @ Fr[k]
            if need[k]:
                gap_now = (self.user[self.up_c] + d[self.up_c]) - (self.user[self.lo_c] + d[self.lo_c])
                kk = np.float32(kappa[k])
                # blend the gap vectors but their lengths linearly, so a half-on gate never closes
                # lips further than either end (the vectors can point differently when pressed)
                mix = (1 - kk) * gap_now + kk * G[k]
                length = (1 - kk) * np.linalg.norm(gap_now, axis=1) + kk * np.linalg.norm(G[k], axis=1)
                mix *= (length / np.maximum(np.linalg.norm(mix, axis=1), 1e-12))[:, None]
                corr = gap_now - mix
                d += (-(1.0 - LOWER_LIP_SHARE)) * (self.W_up @ corr) + LOWER_LIP_SHARE * (self.W_lo @ corr)
            np.add(self.user, d, out=out[k])
        return out
