"""Training: per-model optimiser math (``optim``), THE batched trainer (``trainer``) with the
in-context regression family (``config``, ``tasks``, ``regression``), a one-call fit of any loss
(``fit``) and the benchmark against a plain PyTorch loop (``bench``). Imports ``common`` and below."""
