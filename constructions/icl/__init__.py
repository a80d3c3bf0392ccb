"""In-context regression constructions: GD, GD++, preconditioned GD, Newton-Schulz, ridge
(Newton and Sherman-Morrison), GD in ReLU and softmax attention. One module per construction;
``layerwise`` holds the per-layer comparison they share."""
