"""Figures from tidy frames, in seaborn's manner (``core``), and the figures of each experiment
(``figures`` for trained runs, ``icl``, ``approx``, ``ood``). Imports ``analysis`` and below."""
