"""Training, measurement, storage, plots and the `ttb` command line."""
