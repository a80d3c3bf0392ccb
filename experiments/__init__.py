"""Everything that trains, measures, stores, plots, or has a CLI.

Layers, lowest first (a folder imports its own layer and lower ones): ``common`` (config reading,
validators, devices, seeds, atomic files) < ``training`` (the optimiser, THE trainer, the regression
family, the benchmark) < ``sweeps`` (sweep files, the runner and its backends, the store) <
``analysis`` (pure (weights, data) -> tidy frames) < ``plots`` (figures from frames) < ``approx`` |
``ood`` (experiment families on the sweep engine) < ``reproduce`` (published setups) < ``reports``
(the demo page) < ``commands`` (the ``ttb`` CLI, the only place for imports inside functions).
"""
