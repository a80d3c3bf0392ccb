"""Positional attention running parallel algorithms: the pointer head (``pointer``), prefix scans
(``scan``) and bitonic sort (``sort``)."""
