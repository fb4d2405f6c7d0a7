"""Cross-modal semi-supervised animation (paper 001): render domains, train the face-to-geometry
regressor, train the speech-to-image transcoder, evaluate.  ``python -m training.crossmodal -h``."""
