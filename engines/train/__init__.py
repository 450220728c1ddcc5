"""Training-time code: synthetic distortions, pristine content, pseudo-labels, training loops."""
