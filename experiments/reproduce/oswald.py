"""von Oswald et al. 2023: one trained linear self-attention layer is one step of gradient descent.

The claim (Fig. 2 of the paper): a single linear self-attention layer trained on in-context linear
regression reaches the test loss of one GD step at the best step size, and its prediction's
gradient with respect to the query aligns with GD's (cosine similarity -> 1).

Measured on fresh test prompts of the run's own task:
    test loss       0.5 * mean (y_hat - y)^2 (the paper's convention, ``compute_loss`` of src/train.py),
                    for the trained layer and for one GD step with the best eta (fitted on other
                    prompts, ``references.best_eta``): the "published" number is GD's, the theory the
                    trained layer should meet
    model cosine    mean over prompts of cos(d y_hat / d x_q, eta * X^T y / N) (metrics.compare)
"""

from __future__ import annotations

from pathlib import Path

from experiments.analysis import metrics, prompts, references
from experiments.plots import core as plots
from experiments.reproduce.core import Fidelity, Reproduction, row

D, N = 10, 10
PROMPTS = 4096
CODE = ("google-research/self-organising-systems, transformers_learn_icl_by_gd: src/config.py, src/data.py "
        "(create_reg_data), src/train.py, constructed_token_setup.ipynb")


def preset(batch_size: int, seeds: list[int]) -> dict:
    return {
        "sweep": {"name": "oswald", "max_models_per_batch": len(seeds)},
        "task": {"d": D, "n_points": N + 1, "format": "example", "x_dist": "uniform", "x_range": 0.5,
                 "eval_batch_size": 2048},
        "model": {"n_layers": 1, "d_model": D + 1, "n_heads": 1, "d_head": D + 1, "attention": "linear_sum", "mlp": "none",
                  "norm": "none", "final_norm": False, "bias": False, "init_std": 0.0135, "positions": False,
                  "io": "identity"},
        "train": {"steps": 5000, "batch_size": batch_size, "lr": 1e-3, "beta1": 0.9, "beta2": 0.98, "eps": 1e-9,
                  "min_lr_ratio": 1.0, "grad_clip": 0.001, "log_every": 250},
        "grid": {"train.seed": seeds},
    }


def measure(rep: Reproduction, scale: str, runs, figures: Path):
    losses, gd_losses, cosines = [], [], []
    for run in runs:
        p = prompts.prompts_for_task(run.config.task, PROMPTS, seed=0)
        eta = references.best_eta(prompts.prompts_for_task(run.config.task, PROMPTS, seed=1), 1)
        gd = references.reference("gd", eta=eta, n_iter=1)
        cmp = metrics.compare(run.learner, p, [gd])
        final = cmp[cmp.layer == run.learner.n_layers]
        losses.append(0.5 * float(final[(final.algorithm == "model") & (final.metric == "nmse")].value.iloc[0]) * D)
        gd_losses.append(0.5 * float(((gd.predictions(p)[1] - p.y_query) ** 2).mean()))
        cosines.append(float(final[(final.algorithm == "gd") & (final.iteration == 1) &
                                   (final.metric == "model_cosine")].value.iloc[0]))
    gd_loss = sum(gd_losses) / len(gd_losses)
    rows = [row(rep, scale, "test loss (0.5 mean squared error)", gd_loss, losses,
                "theory: one GD step at the best eta on the same prompts (Fig. 2, the curves coincide)",
                claim="the trained layer's loss equals one GD step's", holds=abs(sum(losses) / len(losses) / gd_loss - 1) < 0.05),
            row(rep, scale, "model cosine with the GD step", 1.0, cosines,
                "Fig. 2 (right): cosine similarity of the gradients in x_q approaches 1",
                claim="the trained layer's prediction gradient aligns with GD's", holds=min(cosines) > 0.99)]
    return rows, [_curve(runs, figures)]


def _curve(runs, figures: Path) -> Path:
    """Test loss against in-context examples: the trained layers beside one GD step and least squares."""
    run = runs[0]
    p = prompts.prompts_for_task(run.config.task, 1024, seed=0)
    eta = references.best_eta(prompts.prompts_for_task(run.config.task, 1024, seed=1), 1)
    data = metrics.baseline_curves(p, [references.reference("gd", eta=eta, n_iter=1), references.reference("ols")],
                                   iterations=(1,))
    ax = plots.error_curves(data)
    ax.set_title("von Oswald et al.: one LSA layer vs one GD step", fontsize="small")
    return plots.save(ax, data, figures / "oswald_baselines")[0]  # save closes the figure


FIDELITY = (
    Fidelity("input distribution", "x ~ U(-input_range / 2, input_range / 2)^d, input_range = 1 (src/data.py; the "
             "paper's text says U(-1, 1))", "U(-0.5, 0.5)^10", "U(-0.5, 0.5)^10", "follows the code"),
    Fidelity("w, noise", "w ~ N(0, I), no noise", "same", "same"),
    Fidelity("d, N", "input_size 10, dataset_size 10", "10, 10", "10, 10"),
    Fidelity("tokens", "e_i = (x_i, y_i), query (x_q, 0), keys exclude the query (include_query = False)",
             "example format, exclude_query mask", "same"),
    Fidelity("model", "1 linear self-attention layer (scores q.k used as they are, no 1 / N: src/attn.py), key_size "
             "11, 1 head, no bias, no MLP, no LayerNorm, no positional encoding, no input or output projection (the "
             "prediction is -y at the query)",
             "same (attention 'linear_sum', model.io = 'identity', positions = false)", "same"),
    Fidelity("init", "haiku VarianceScaling(0.002) (truncated normal, std ~ sqrt(0.002 / 11) = 0.013)",
             "normal(0, 0.0135)", "same", "not truncated"),
    Fidelity("optimiser", "Adam(W) lr 1e-3, b1 0.9, b2 0.98, eps 1e-9, wd 0, clip by global norm 0.001",
             "same (per-model clip)", "same"),
    Fidelity("batch, steps", "bs 2048, 5000 steps (training_steps for one recurrent layer)", "2048, 5000",
             "512, 5000", "smaller batch on the CPU"),
    Fidelity("loss", "0.5 * squared error of -(readout) at the query", "mean squared error",
             "mean squared error", "a factor 1/2: Adam is invariant to it"),
    Fidelity("seeds", "1 (num_seeds)", "5", "3"),
)

OSWALD = Reproduction(
    name="oswald", paper="von Oswald et al. 2023, Transformers learn in-context by gradient descent (2212.07677)",
    claim="One trained linear self-attention layer implements one step of gradient descent on the in-context "
          "examples: its test loss is GD's, and its prediction's gradient in the query aligns with GD's.",
    code=CODE, presets={"cpu": lambda: preset(512, [0, 1, 2]), "paper": lambda: preset(2048, [0, 1, 2, 3, 4])},
    measure=measure, fidelity=FIDELITY, minutes_cpu=2.0)
