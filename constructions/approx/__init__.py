"""Approximation theorems made runnable: single-layer universal approximation (``universal``), an
MPNN with a virtual node imitating attention (``mpnn_attention``, ``mpnn_selection``, on the canvas
of ``mpnn_canvas``), and Pre-LN = Pre-RMSNorm = Pre-CRMSNorm (``norm_equivalence``)."""
