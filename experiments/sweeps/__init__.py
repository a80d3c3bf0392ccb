"""The sweep engine: sweep files and grids (``spec``), the runner with its local and Ray backends
(``runner``) and the store (``store``: SQLite rows, run directories, checkpoints). Every family of
runs (regression, sequences, approximation fits) goes through it."""
