"""Transfer: template motion on characters of other topology -- ground truth, rest pose in
silence, nothing outside the face, contact at /p b m/ for lips modelled apart, speed-free."""
from __future__ import annotations

import numpy as np

from engine.metrics import (
    bilabial_closure_rate,
    default_closure_threshold,
    inner_lip_gap,
)
from engine.retarget.transfer import Transfer, contact_gate
from tests.retarget_common import character, fitted, speech, template


def _transfer(name: str, frames: np.ndarray) -> np.ndarray:
    c, fit = character(name), fitted(name)
    return np.concatenate(list(Transfer(fit, template(), None, c.vertices).frames(frames, 30.0, chunk=64)))


def _closure(frames, fit, vertices, phones) -> float:
    face = fit.head_index[fit.weight > 0.5]
    thr = default_closure_threshold(vertices, face)
    return bilabial_closure_rate(frames, phones, 30.0, fit.lip_upper, fit.lip_lower, thr)


def test_contact_gate_hand_computed():
    thr = 1.0
    g = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 5.0, 0.2, 5.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    k = contact_gate(g, thr, fps=10.0, window_s=0.2)        # window: +-2 frames
    np.testing.assert_allclose(k[[0, 1, 2, 3, 12, 13, 14]], 0.0)   # closed lips in silence: gate off
    assert k[7] == 1.0                                     # closed between two openings: on
    assert k[6] == 0.0                                     # open frame: off
    assert k[4] == 1.0 and k[10] == 1.0                    # closed, opening within 2 frames: on


def test_rest_pose_untouched_in_silence():
    c = character("stylised")
    rest = np.repeat(template().vertices[None], 20, axis=0)
    out = _transfer("stylised", rest)
    np.testing.assert_array_equal(out, np.repeat(c.vertices[None].astype(np.float32), 20, axis=0))


def test_remeshed_head_follows_ground_truth():
    frames, _, rest = speech()
    c = character("remeshed")
    out = _transfer("remeshed", frames)
    gt = c.project(frames, rest)
    assert out.shape == (len(frames), len(c.vertices), 3)
    fit = fitted("remeshed")
    face = fit.weight > 0.5
    err = np.linalg.norm(out - gt, axis=2)[:, face]
    motion = np.linalg.norm(gt - c.vertices[None], axis=2)[:, face]
    assert err.mean() < 0.1 * motion.mean() + 2e-4, (err.mean(), motion.mean())
    g_out = inner_lip_gap(out, fit.lip_upper, fit.lip_lower)
    g_tpl = inner_lip_gap(frames, template().masks["lip_upper_inner"], template().masks["lip_lower_inner"])
    assert np.corrcoef(g_out, g_tpl)[0, 1] > 0.95


def test_nothing_outside_the_face_moves():
    frames, _, _ = speech()
    c, fit = character("body"), fitted("body")
    out = _transfer("body", frames)
    disp = np.linalg.norm(out - c.vertices[None].astype(np.float32), axis=2)   # output is float32
    body = np.setdiff1d(np.arange(len(c.vertices)), fit.head_index)
    assert disp[:, body].max() == 0.0
    # the back of the skull (behind the ears) does not move either
    back = fit.head_index[c.vertices[fit.head_index, 1] > 0.03]
    assert disp[:, back].max() < 1e-6
    assert disp.max() > 0.01                               # while the jaw really moves (> 1 cm)


def test_lips_modelled_apart_still_close_at_bilabials():
    frames, phones, _ = speech()
    c, fit = character("stylised"), fitted("stylised")
    rest_gap = inner_lip_gap(c.vertices[None], fit.lip_upper, fit.lip_lower)[0]
    thr = default_closure_threshold(c.vertices, fit.head_index[fit.weight > 0.5])
    assert rest_gap > 3 * thr                              # really modelled apart
    out = _transfer("stylised", frames)
    m = template().masks
    tpl = bilabial_closure_rate(frames, phones, 30.0, m["lip_upper_inner"], m["lip_lower_inner"],
                                default_closure_threshold(template().vertices, m["face"]))
    got = _closure(out, fit, c.vertices, phones)
    assert tpl == 1.0 and abs(got - tpl) <= 0.05
    gap = inner_lip_gap(out, fit.lip_upper, fit.lip_lower)
    np.testing.assert_allclose(gap[:10], rest_gap, rtol=1e-4)   # silence at the start: lips stay apart


def test_contact_off_keeps_the_gap_offset():
    """Without the contact term the apart-modelled lips would not meet: the term is what closes them."""
    frames, phones, _ = speech()
    c, fit = character("stylised"), fitted("stylised")
    tr = Transfer(fit, template(), None, c.vertices)
    out = np.concatenate(list(tr.frames(frames, 30.0, contact=False)))
    assert _closure(out, fit, c.vertices, phones) < 0.5


def test_units_and_axes_of_a_centimetre_y_up_head():
    frames, _, rest = speech()
    c, fit = character("cm_yup"), fitted("cm_yup")
    out = _transfer("cm_yup", frames)
    gt = c.project(frames, rest)                            # the template motion projected onto it
    d_out = out - c.vertices[None]
    d_gt = gt - c.vertices[None]
    face = fit.weight > 0.9
    # motion is in centimetres and along the file's axes (Y up: the jaw opens along -Y)
    jaw = np.argmax(np.abs(d_gt[:, face, 1]).max(1))
    a, b = d_out[jaw, face].reshape(-1), d_gt[jaw, face].reshape(-1)
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert 0.7 < np.linalg.norm(a) / np.linalg.norm(b) < 1.4
