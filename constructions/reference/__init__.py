"""Reference algorithms and baselines: pure, batched math (every prompt and every prefix at once),
float64-capable, on any device. Imports nothing of the project above ``synthetic``.

algorithms (least squares, GD, ridge, Newton), baselines (Bayes ridge, Lasso, pools, k-NN),
nonlinear (Garg et al.'s baselines for nonlinear tasks, logistic regression, the Bayes selector for
task mixtures), trees (decision trees and gradient boosting: scikit-learn, the optional
``baselines`` extra, one fit per prompt)."""
