"""What a construction is and how it is checked: the contract (``contract``), the checker and the
mutations (``run``), domain samplers (``domains``) and hypothesis strategies (``strategies``).
Imports the core of ``constructions`` and ``reference``; every construction family imports it."""
