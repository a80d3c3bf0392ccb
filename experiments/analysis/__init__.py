"""Pure analysis: (weights, data) -> tidy DataFrames. ``core`` (prompts, learners, the frame
contract), ``prompts``, ``references`` (algorithms as the analysis sees them), ``metrics``,
``probes``, ``interp``, ``icl`` (the in-context task tables) and ``runs`` (trained runs read back)."""
