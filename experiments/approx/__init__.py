"""`ttb approx`: approximation constructions beside trained models (one-layer transformers on ridge
targets, MPNN + VN imitating attention), trained through the sweep engine."""
