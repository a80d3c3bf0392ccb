"""`ttb ood`: positional versus standard transformers out of distribution, trained through the
sweep engine (``sequences`` is the training family, ``config`` the file, ``experiment`` the rest)."""
