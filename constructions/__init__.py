"""The shared forward pass, reference algorithms and hand-set weight constructions."""
