"""Reference algorithms and baselines: pure, batched math (every prompt and every prefix at once),
float64-capable, on any device. Imports nothing of the project above ``synthetic``."""
