"""Speech rig for the SynthTalk head: named controls -> vertex positions.

Why this design: the co-articulation model produces per-frame control weights in [0, 1];
the corpus needs meshes that (a) really close at bilabials, (b) open like a jaw, and (c)
never tear or invert at the extremes of normal speech. So most controls are precomputed
linear displacement bases (smooth falloffs, a fast ``W @ B``), and the three that must be
exact are evaluated analytically on the current pose:

* ``blink_l`` / ``blink_r`` rotate the upper lid about the eyeball centre (so it slides over
  the eyeball, never through it) by exactly the angle that brings each upper-lid margin
  vertex onto its lower-lid partner at weight 1;
* ``jaw_open`` rotates the lower face about the jaw pivot axis (X axis through the
  temporomandibular joints) with a smooth per-vertex weight: 1 on the chin and lower lip
  centre, 0 on the upper lip and skull, a lens-shaped falloff toward the mouth corners;
* ``lips_close`` (applied last) moves each paired upper/lower inner-lip vertex toward a
  common meeting point (the lower lip travels 65% of the way), with falloff over the lips,
  so the inner-lip gap at weight 1 is zero whatever the jaw does.

Pose order: neutral + linear bases -> blinks -> jaw rotation -> lip closure.
Weights are clipped to [0, 1]. Axes as in head.py: metres, Z up, face toward -Y, +X = the
character's left (``blink_l`` closes the +X eye).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.synthtalk.head import (
    ROW_EYE,
    T_EYE,
    T_MOUTH,
    THETA_EYE_IN,
    THETA_EYE_OUT,
    THETA_MOUTH,
    Head,
    _layout,
)

__all__ = ["CONTROLS", "JAW_MAX_DEG", "LOWER_LIP_SHARE", "Rig"]

CONTROLS = ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch", "lower_lip_tuck",
            "upper_lip_raise", "smile", "brow_raise", "brow_furrow", "blink_l", "blink_r"]
JAW_MAX_DEG = 15.0        # jaw_open = 1: ~3 cm at the lower lip, a wide-open mouth
LOWER_LIP_SHARE = 0.65    # lips_close: fraction of the gap travelled by the lower lip
UPPER_LID_SHARE = 0.85    # blink: fraction of the eye opening closed by the upper lid
_IDX = {n: i for i, n in enumerate(CONTROLS)}


def _g(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rotate_x(p: np.ndarray, centre: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate points p (..., 3) about the X axis through centre by angle (...) radians."""
    y = p[..., 1] - centre[1]
    z = p[..., 2] - centre[2]
    c, s = np.cos(angle), np.sin(angle)
    out = p.copy()
    out[..., 1] = centre[1] + c * y - s * z
    out[..., 2] = centre[2] + s * y + c * z
    return out


class Rig:
    """Pose a :class:`Head` with the named speech controls (see module docstring)."""

    def __init__(self, head: Head):
        if not isinstance(head, Head):
            raise TypeError(f"Rig needs a training.synthtalk.head.Head, got {type(head).__name__}")
        self.head = head
        self.template = head.vertices.astype(np.float64)
        self.num_vertices = len(self.template)
        L = _layout()
        info = head.info
        self._info = info
        th = info["theta"]
        el = info["elev_warped"]
        a = np.abs(th)
        kind, ring, ms = info["kind"], info["ring"], info["mouth_side"].astype(float)
        grid = kind == 0
        inner = (kind == 1) & (ring == 1)          # inner lip roll
        deep = (kind == 1) & (ring >= 2)           # teeth and cavity
        self.pivot = np.asarray(head.landmarks["jaw_pivot"], dtype=np.float64)
        V = self.num_vertices
        x = self.template[:, 0]
        sx = np.sign(x)
        dt = el - T_MOUTH
        xi = th / THETA_MOUTH
        lips_on = (grid | inner).astype(float)

        # ---------------------------------------------------------------- jaw weight
        o = np.where(np.abs(xi) < 1, np.clip(1 - xi ** 2, 0, 1) ** 0.3, 0.0)
        beyond = np.maximum(a - THETA_MOUTH, 0.0)
        t_line = T_MOUTH + 0.45 * beyond
        band = 3.5 + 0.5 * beyond
        side = np.where(ms != 0, ms, 0.0)
        geo_side = np.sign(el - t_line)
        side = np.where(np.abs(xi) < 1, side, geo_side)
        delta = np.abs(el - t_line)
        h = 1.0 - (1.0 - o) * np.exp(-(delta / band) ** 2)
        w = 0.5 - 0.5 * side * h
        w = np.where(inner, 0.5 - 0.5 * ms * o, w)
        w = np.where(deep, 0.5 - 0.5 * ms, w)
        w *= 1.0 - _smoothstep(a, 70.0, 100.0)
        w *= np.where(kind == 0, _smoothstep(el, -82.0, -62.0), 1.0)
        w[kind >= 2] = 0.0
        self.jaw_weight = np.clip(w, 0.0, 1.0)
        self._jaw_idx = np.nonzero(self.jaw_weight > 1e-4)[0]

        # ---------------------------------------------------------------- linear bases
        B = np.zeros((len(CONTROLS), V, 3))
        hu, hl = 5.2, 6.0
        up = ms > 0
        lo = ms < 0
        tau_u = np.where(up, np.maximum(dt, 0) / hu, 0.0)
        tau_l = np.where(lo, np.maximum(-dt, 0) / hl, 0.0)
        lat = np.exp(-(np.maximum(a - THETA_MOUTH + 2.0, 0.0) / 4.0) ** 2)   # fades past the corners
        # lip body weights (1 near the lip line, fading into skin); inner roll moves with the lip
        body_u = np.where(up, np.exp(-(tau_u / 1.3) ** 2), 0.0) * lat * lips_on
        body_l = np.where(lo, np.exp(-(tau_l / 1.3) ** 2), 0.0) * lat * lips_on
        body = np.where(ms == 0, np.exp(-(dt / 7.0) ** 2) * lat * lips_on, body_u + body_l)
        body = np.where(inner, lat, body)
        # vermilion bulge (0 on the contact row, max mid-lip): moves when lips thin/roll
        verm_u = np.where(up & grid, np.sin(np.pi * np.clip(tau_u, 0, 1)) ** 0.8, 0.0) * lat
        verm_l = np.where(lo & grid, np.sin(np.pi * np.clip(tau_l, 0, 1)) ** 0.8, 0.0) * lat

        # lips_press: vermilion rolls in toward the contact line and back, lips look thinner
        B[_IDX["lips_press"], :, 2] = -0.0016 * verm_u + 0.0016 * verm_l
        B[_IDX["lips_press"], :, 1] = 0.0018 * (verm_u + verm_l) + 0.0008 * body

        # pucker: protrude and narrow, lips closed-ish
        wp = np.exp(-(dt / 9.0) ** 2) * np.exp(-(np.maximum(a - 0.6 * THETA_MOUTH, 0) / 8.0) ** 2)
        wp = np.where(deep, 0.15, wp) * (kind <= 1)
        wp_lip = wp
        B[_IDX["pucker"], :, 1] = -0.0095 * wp_lip - 0.0015 * (verm_u + verm_l)
        B[_IDX["pucker"], :, 0] = -0.38 * x * wp_lip

        # funnel: protrude, narrow less, lips part into a rounded opening and flare
        env = np.where(np.abs(xi) < 1, np.clip(1 - xi ** 2, 0, 1) ** 0.6, 0.0)
        B[_IDX["funnel"], :, 1] = -0.0075 * wp_lip - 0.0025 * (verm_u + verm_l)
        B[_IDX["funnel"], :, 0] = -0.22 * x * wp_lip
        B[_IDX["funnel"], :, 2] = 0.0032 * env * body_u - 0.0036 * env * body_l

        # stretch: mouth wider, corners back, lips thinner
        wc = _g(a, THETA_MOUTH, 7.0) * np.exp(-(dt / 8.0) ** 2) * (kind <= 1)
        wl = np.exp(-(dt / 8.0) ** 2) * np.exp(-(np.maximum(a - THETA_MOUTH, 0) / 10.0) ** 2) * (kind <= 1)
        B[_IDX["stretch"], :, 0] = 0.22 * x * wl + 0.003 * sx * wc
        B[_IDX["stretch"], :, 1] = 0.0025 * wc
        B[_IDX["stretch"], :, 2] = -0.0008 * verm_u + 0.0008 * verm_l

        # lower_lip_tuck (f/v): lower lip rolls up and back under the upper teeth
        roll = np.where(lo, np.exp(-((tau_l - 0.45) / 0.75) ** 2), 0.0) * lat * (grid | inner)
        B[_IDX["lower_lip_tuck"], :, 1] = 0.0055 * roll
        B[_IDX["lower_lip_tuck"], :, 2] = 0.0022 * roll * np.clip(tau_l / 0.4, 0, 1)

        # upper_lip_raise: upper lip up (shows the upper teeth), a little forward
        ru = np.where(up, np.exp(-(np.maximum(dt - hu, 0.0) / 5.0) ** 2), 0.0) \
            * np.exp(-(np.maximum(a - THETA_MOUTH + 1.0, 0.0) / 5.0) ** 2) * (grid | inner)
        ru = ru * (0.55 + 0.45 * _g(a, 7.0, 5.0))
        B[_IDX["upper_lip_raise"], :, 2] = 0.0038 * ru
        B[_IDX["upper_lip_raise"], :, 1] = -0.0010 * ru

        # smile: corners up, back and out; cheeks lift and bulge; lower lids rise a little
        sm = _g(a, THETA_MOUTH + 1.0, 6.5) * _g(el, T_MOUTH + 1.0, 7.5) * (kind <= 1) * (~deep)
        ch = _g(a, 25.0, 9.0) * _g(el, -17.0, 8.0) * grid
        lid_lo = grid & (info["eye_side"] < 0) & (info["eye"] != 0)
        lid_w = np.where(lid_lo, _g(el, T_EYE - 3.0, 3.0), 0.0)
        B[_IDX["smile"], :, 2] = 0.0085 * sm + 0.0035 * ch + 0.0009 * lid_w
        B[_IDX["smile"], :, 1] = 0.0045 * sm - 0.0020 * ch
        B[_IDX["smile"], :, 0] = 0.0060 * sx * sm + 0.08 * x * wl

        # brow_raise: brows and forehead up; upper lid skin follows a little
        # 0 on the lid margin and the lid skin that hugs the eyeball, 1 from the brow up, so
        # the lids stay on the eyeball while the brows move
        above_eye = _smoothstep(el, T_EYE + 5.5, 12.0)
        br = _g(el, 12.0, 6.5) * (1 - _smoothstep(a, 38.0, 55.0)) * grid * above_eye
        br = br + 0.35 * _smoothstep(el, 12.0, 30.0) * (1 - _smoothstep(el, 40.0, 70.0)) \
            * (1 - _smoothstep(a, 38.0, 60.0)) * grid
        B[_IDX["brow_raise"], :, 2] = 0.0065 * br
        B[_IDX["brow_raise"], :, 1] = -0.0006 * br

        # brow_furrow: inner brows down and together, glabella bunches forward
        bf = _g(a, 9.0, 7.0) * _g(el, 11.0, 5.0) * grid * above_eye
        B[_IDX["brow_furrow"], :, 2] = -0.0040 * bf
        B[_IDX["brow_furrow"], :, 0] = -0.0032 * sx * bf * _smoothstep(a, 0.0, 4.0)
        B[_IDX["brow_furrow"], :, 1] = -0.0012 * bf
        self.bases = B.reshape(len(CONTROLS), V * 3)

        # ---------------------------------------------------------------- lips_close
        self.upper_inner = head.topology.masks["lip_upper_inner"]
        self.lower_inner = head.topology.masks["lip_lower_inner"]
        col_theta = np.asarray([th[i] for i in self.upper_inner])
        near = np.argmin(np.abs(th[:, None] - col_theta[None, :]), axis=1)
        f_u = np.where(up, np.exp(-(np.maximum(dt, 0) / (hu * 0.95)) ** 2), 0.0)
        f_l = np.where(lo, np.exp(-(np.maximum(-dt, 0) / (hl * 1.1)) ** 2), 0.0)
        lat_c = np.exp(-(np.maximum(a - THETA_MOUTH, 0.0) / 3.0) ** 2)
        f = (f_u + f_l) * lat_c
        f = np.where(grid, f, 0.0)
        f = np.where(inner, 1.0, f)
        f = np.where(deep & (ring == 2), 0.3, f)
        f[self.upper_inner] = 1.0
        f[self.lower_inner] = 1.0
        sel = np.nonzero((f > 1e-4) & (ms != 0))[0]
        self._close_idx = sel
        self._close_f = f[sel]
        self._close_col = near[sel]
        self._close_up = ms[sel] > 0

        # ---------------------------------------------------------------- blinks
        self._blink = {}
        for s, name in ((1, "blink_l"), (-1, "blink_r")):
            c0, c1 = L["eye_cols"][s]
            cols = list(range(c0 + 1, c1))
            um = L["up"][ROW_EYE, cols]
            lm = L["dn"][ROW_EYE, cols]
            centre = np.asarray(head.landmarks["eye_centres"][s], dtype=np.float64)
            cth = th[um]
            eyev = info["eye"] == s
            margin_el = el[um]
            nearj = np.argmin(np.abs(th[:, None] - cth[None, :]), axis=1)
            # upper lid: margin row (1) fading upward to the crease; lower lid: short falloff
            above = eyev & (info["eye_side"] > 0) & (kind == 0)
            du = el - margin_el[nearj]
            lat_e = np.exp(-(np.maximum(np.maximum(THETA_EYE_IN - a, a - THETA_EYE_OUT), 0.0) / 2.0) ** 2)
            fu = np.where(above, np.exp(-(np.maximum(du, 0) / 4.5) ** 2) * lat_e, 0.0)
            fu = np.where(eyev & (kind == 2) & (info["eye_side"] > 0), 1.0, fu)
            below = eyev & (info["eye_side"] < 0) & (kind == 0)
            dl = el[lm][nearj] - el
            fl = np.where(below, np.exp(-(np.maximum(dl, 0) / 2.5) ** 2) * lat_e, 0.0)
            fl = np.where(eyev & (kind == 2) & (info["eye_side"] < 0), 1.0, fl)
            fu[um] = 1.0
            fl[lm] = 1.0
            iu = np.nonzero(fu > 1e-4)[0]
            il = np.nonzero(fl > 1e-4)[0]
            self._blink[name] = {"centre": centre, "um": um, "lm": lm, "iu": iu, "fu": fu[iu], "ju": nearj[iu],
                                     "il": il, "fl": fl[il], "jl": nearj[il]}

    # ------------------------------------------------------------------ API
    def weights_array(self, weights: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """Normalise weights to a (T, len(CONTROLS)) float array clipped to [0, 1]."""
        if isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(CONTROLS))
            if unknown:
                raise ValueError(f"unknown rig controls {unknown}; valid controls: {CONTROLS}")
            lengths = {np.size(v) for v in weights.values() if np.ndim(v) > 0}
            if len(lengths) > 1:
                raise ValueError(f"all control curves must have the same length, got lengths {sorted(lengths)}")
            T = lengths.pop() if lengths else 1
            W = np.zeros((T, len(CONTROLS)))
            for k, v in weights.items():
                W[:, _IDX[k]] = np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1), (T,))
        else:
            W = np.asarray(weights, dtype=np.float64)
            if W.ndim == 1:
                W = W[None]
            if W.ndim != 2 or W.shape[1] != len(CONTROLS):
                raise ValueError(f"weights array must be (T, {len(CONTROLS)}) in CONTROLS order, got {W.shape}")
        if not np.all(np.isfinite(W)):
            raise ValueError("rig weights contain NaN or inf")
        return np.clip(W, 0.0, 1.0)

    def pose(self, weights: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """(T, V, 3) float32 vertex positions for T frames of control weights."""
        W = self.weights_array(weights)
        T = W.shape[0]
        X = self.template[None] + (W @ self.bases).reshape(T, self.num_vertices, 3)
        for name in ("blink_l", "blink_r"):
            w = W[:, _IDX[name]]
            if np.any(w > 0):
                self._apply_blink(X, w, self._blink[name])
        jaw = W[:, _IDX["jaw_open"]]
        if np.any(jaw > 0):
            idx = self._jaw_idx
            ang = np.deg2rad(JAW_MAX_DEG) * jaw[:, None] * self.jaw_weight[idx][None, :]
            X[:, idx] = _rotate_x(X[:, idx], self.pivot, ang)
        close = W[:, _IDX["lips_close"]]
        if np.any(close > 0):
            U = X[:, self.upper_inner]
            Lw = X[:, self.lower_inner]
            gap = U - Lw                                           # (T, P, 3)
            d_up = -(1.0 - LOWER_LIP_SHARE) * gap * close[:, None, None]
            d_lo = LOWER_LIP_SHARE * gap * close[:, None, None]
            d = np.where(self._close_up[None, :, None], d_up[:, self._close_col], d_lo[:, self._close_col])
            X[:, self._close_idx] += self._close_f[None, :, None] * d
        return X.astype(np.float32)

    def _apply_blink(self, X: np.ndarray, w: np.ndarray, b: dict) -> None:
        c = b["centre"]
        U = X[:, b["um"]] - c
        Lo = X[:, b["lm"]] - c
        # elevation angle of each margin vertex around the eye centre, seen from the side
        au = np.arctan2(U[..., 2], -U[..., 1])
        al = np.arctan2(Lo[..., 2], -Lo[..., 1])
        span = np.maximum(au - al, 0.0)                            # (T, P) opening angle
        # rotating by +angle about X lowers the elevation angle (see _rotate_x)
        ang_u = UPPER_LID_SHARE * span * w[:, None]
        ang_l = -(1.0 - UPPER_LID_SHARE) * span * w[:, None]
        # where the two margins would meet at full closure they still differ slightly (the
        # upper and lower lid vertices of a column sit at different x on the curved eye):
        # blend that residual in with the weight so weight 1 closes exactly
        U_full = _rotate_x(X[:, b["um"]], c, UPPER_LID_SHARE * span)
        L_full = _rotate_x(X[:, b["lm"]], c, -(1.0 - UPPER_LID_SHARE) * span)
        res = L_full - U_full                                      # (T, P, 3), ~1 mm
        X[:, b["iu"]] = _rotate_x(X[:, b["iu"]], c, ang_u[:, b["ju"]] * b["fu"][None])
        X[:, b["il"]] = _rotate_x(X[:, b["il"]], c, ang_l[:, b["jl"]] * b["fl"][None])
        X[:, b["iu"]] += (w[:, None] * b["fu"][None])[..., None] * res[:, b["ju"]]
