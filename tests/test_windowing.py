"""engine.models.windowing: cross-faded chunks for models without a finite receptive field."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.base import TalkingFaceModel
from engine.models.windowing import crossfade_weights, predict_sequence


class GlobalDummy(TalkingFaceModel):
    """Output depends on the whole input it is given: frame value + the mean of all frames seen."""

    receptive_field = None
    chunk_frames = 50
    chunk_overlap = 10

    def __init__(self) -> None:
        super().__init__()
        self.num_vertices = 1
        self.register_buffer("template", torch.zeros(1, 3))
        self.longest_call = 0

    def neutral_style(self) -> torch.Tensor:
        return torch.zeros(1)

    def predict(self, features, template, style):
        self.longest_call = max(self.longest_call, features.shape[1])
        y = features[..., :1] + features[..., :1].mean(dim=1, keepdim=True)       # (B, T, 1)
        return (y.unsqueeze(-1) * torch.ones(3) + template.unsqueeze(1))          # (B, T, 1, 3)


def test_crossfade_weights_by_hand():
    torch.testing.assert_close(crossfade_weights(3), torch.tensor([0.25, 0.5, 0.75]))


def test_chunks_are_crossfaded_continuous_and_unbounded():
    m = GlobalDummy()
    T = 20_000                                    # 400 chunks of 50 frames: no length limit
    t = torch.arange(T, dtype=torch.float32)
    feats = torch.sin(t / 40.0).unsqueeze(1) + 0.002 * t.unsqueeze(1)
    out = predict_sequence(m, feats, m.template, m.neutral_style())
    assert out.shape == (T, 1, 3) and np.isfinite(out).all()
    assert m.longest_call == m.chunk_frames       # memory bounded by the chunk, whatever T is
    y = out[:, 0, 0].astype(np.float64)
    f = feats[:, 0].double().numpy()
    # hand-computed: chunk k covers [40k, 40k + 50); frame 45 is shared by chunks 0 and 1 (6th of
    # the 10 overlapping frames -> weight of chunk 1 = 6/11)
    a = f[45] + f[0:50].mean()
    b = f[45] + f[40:90].mean()
    assert y[45] == pytest.approx((1 - 6 / 11) * a + 6 / 11 * b, abs=1e-5)
    assert y[10] == pytest.approx(f[10] + f[0:50].mean(), abs=1e-5)   # not shared: chunk 0 alone
    # continuity: without the cross-fade the joins would jump by the change of the chunk mean
    hard = np.concatenate([f[s:s + 40] + f[s:s + 50].mean() for s in range(0, T - 50, 40)])
    jump_hard = np.abs(np.diff(hard)).max()
    jump = np.abs(np.diff(y)).max()
    smooth = np.abs(np.diff(f)).max()
    assert jump < smooth + 0.2 * (jump_hard - smooth), (jump, jump_hard, smooth)


def test_short_input_is_one_call_and_bad_overlap_is_refused():
    m = GlobalDummy()
    feats = torch.randn(30, 1)
    out = predict_sequence(m, feats, m.template, m.neutral_style())
    np.testing.assert_allclose(out[:, 0, 0], (feats[:, 0] + feats[:, 0].mean()).numpy(), atol=1e-6)
    m.chunk_overlap = 50
    with pytest.raises(ValueError, match="chunk_overlap"):
        predict_sequence(m, torch.randn(120, 1), m.template, m.neutral_style())
    with pytest.raises(ValueError, match="out must have shape"):
        predict_sequence(GlobalDummy(), feats, m.template, m.neutral_style(), out=np.empty((29, 1, 3), np.float32))
