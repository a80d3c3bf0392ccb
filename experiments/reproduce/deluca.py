"""de Luca et al. 2024: positional attention generalises to values out of the training range; standard
attention does not.

The claim (Fig. 2 of arXiv 2410.01686v1): trained on sequences of n = 8 values from sub-intervals
of [-2, 2], a transformer whose attention weights depend on positions only keeps a small test error
on sub-intervals of [-c, c] up to c = 20, while the standard transformer of the same size, as good
in distribution, is off by two to four orders of magnitude. The paper preset is
``experiments/configs/positional_ood_gpu.toml`` (their code's values, each commented there); the
cpu preset keeps their protocol and architecture and shrinks the width, the training set and the
steps to fit 2 cores in minutes.

Both run through ``ttb ood``'s machinery (:mod:`experiments.ood.experiment`: the sweep engine, then
every model evaluated on 1000 fresh sequences per range). Measured, per task, as their code measures
(``get_loss``: the mean squared error over the value positions):
    mse at c = 2         in distribution, per model kind
    mse at c = c_max     out of distribution, per model kind
    standard / positional mse at c_max, seed by seed: the claim (holds when it is above 10 in every seed)
The published numbers are the means over the 10 runs in their repository's results files
(``results/fixed_length/<task>/scale/train_val_test_scale_n8_samples30000_<kind>.txt``, columns train,
validation, then the test ranges c = 2, 4, ..., 20: the runs behind Fig. 2), the statistic our
``measured`` is (the mean over seeds).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from experiments.common.validate import read_toml
from experiments.ood import experiment as ood
from experiments.plots import core as plots
from experiments.reproduce.core import Fidelity, Reproduction, row

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "positional_ood_gpu.toml"
CODE = ("opallab/positional_attention: experiment_scale.py, data.py (generate_data_basic, Dataset_Basic), model.py, "
        "utils.py, params/scale_params.json, results/fixed_length/<task>/scale/")
THEIR_TASK = {"cumsum": "sum", "cummin": "min", "sort": "sort", "cummedian": "median",
              "cum_max_subarray": "max_sum_subarray"}  # our task -> their results folder
RATIO = 10.0  # the claim holds when standard attention's mse is at least this many times positional's

# Their test ranges and the mean test mse over their 10 runs at each (results/fixed_length/<task>/scale/).
PAPER_CS = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)
PUBLISHED = {
    ("cumsum", "positional"): (4.62e-05, 0.000625, 0.00278, 0.00722, 0.0135, 0.0226, 0.0348, 0.0476, 0.0687, 0.0914),
    ("cumsum", "standard"): (4.55e-05, 0.301, 2.09, 6.74, 14.1, 24.8, 39.6, 57.5, 78.9, 103),
    ("cummin", "positional"): (1.32e-05, 0.000233, 0.00116, 0.00321, 0.00631, 0.0104, 0.0166, 0.0231, 0.0301, 0.0409),
    ("cummin", "standard"): (2.56e-05, 0.0669, 0.436, 1.27, 2.67, 4.39, 6.97, 10.5, 14.6, 20),
    ("sort", "positional"): (0.000139, 0.0012, 0.00852, 0.0417, 0.0581, 0.16, 0.227, 0.327, 0.575, 0.548),
    ("sort", "standard"): (0.000863, 0.62, 2.7, 7.05, 13.4, 20.7, 31.5, 42.5, 59.9, 76.9),
    ("cummedian", "positional"): (6.22e-05, 0.00052, 0.00181, 0.00469, 0.00871, 0.0131, 0.0225, 0.0267, 0.0368,
                                  0.0524),
    ("cummedian", "standard"): (0.000129, 0.0667, 0.528, 1.64, 3.33, 5.86, 8.87, 12.5, 16.7, 21.3),
    ("cum_max_subarray", "positional"): (0.000172, 0.00265, 0.0126, 0.0347, 0.0671, 0.115, 0.17, 0.243, 0.329, 0.427),
    ("cum_max_subarray", "standard"): (0.000125, 0.653, 4.73, 14.5, 30.2, 55.2, 87.6, 130, 175, 249),
}

# The cpu scale: their protocol, model and optimiser, smaller (see FIDELITY for each difference).
CPU_TRAIN = {"seeds": 3, "batch_size": 100, "train_size": 2000, "steps": 2000, "log_every": 20, "lr": 2e-3,
             "warmup": 0, "min_lr_ratio": 1.0, "clip": 0.0, "weight_decay": 0.0, "plateau_factor": 0.9,
             "plateau_patience": 50, "plateau_threshold": 1e-4}


def paper() -> dict:
    """The published setup: ``positional_ood_gpu.toml`` as it is (one source for both)."""
    return {**read_toml(PAPER_CONFIG), "name": "deluca_paper"}


def cpu() -> dict:
    base = paper()
    return {"name": "deluca_cpu", "device": "cpu", "dtype": "float32",
            "task": {**base["task"], "kinds": ["cumsum", "cummin"]},
            "model": {**base["model"], "width": 32, "d_mlp": 32},
            "train": dict(CPU_TRAIN), "eval": {"batch_size": 1000}}


def published(task: str, kind: str, c: float) -> float | None:
    """Their mean test mse at c, or None where they have no such task or range."""
    values = PUBLISHED.get((task, kind))
    return None if values is None or c not in PAPER_CS else values[PAPER_CS.index(c)]


def _source(task: str, kind: str, c: float) -> str:
    return (f"Fig. 2; mean of the 10 runs, column c = {c:g}, of results/fixed_length/{THEIR_TASK.get(task, task)}/scale/"
            f"train_val_test_scale_n8_samples30000_{kind}.txt")


def _mse(per_model: pd.DataFrame, task: str, kind: str, c: float) -> pd.Series:
    """Per seed (sorted by seed): the test mse of (task, kind) at c."""
    part = per_model[(per_model.task == task) & (per_model.model_kind == kind) & (per_model.c == c)]
    return part.sort_values("seed").set_index("seed")["mse"]


def measure(rep: Reproduction, scale: str, per_model: pd.DataFrame, c_train: float, c_max: float) -> list:
    """Rows per task: both kinds' mse in and out of distribution, and the claim (the ratio)."""
    rows = []
    for task in pd.unique(per_model.task):
        for kind in ("positional", "standard"):
            for c in (c_train, c_max):
                where = " (in distribution)" if c == c_train else ""
                rows.append(row(rep, scale, f"{task}, {kind}: mse at c = {c:g}{where}", published(task, kind, c),
                                _mse(per_model, task, kind, c).tolist(), _source(task, kind, c)))
        ratios = (_mse(per_model, task, "standard", c_max) / _mse(per_model, task, "positional", c_max)).tolist()
        theirs = [published(task, kind, c_max) for kind in ("standard", "positional")]
        rows.append(row(rep, scale, f"{task}: standard / positional mse at c = {c_max:g}",
                        None if None in theirs else theirs[0] / theirs[1], ratios,
                        "ratio of the two published means above (Fig. 2)",
                        claim=f"positional attention's out-of-distribution error is over {RATIO:g} times below "
                              "standard attention's in every seed", holds=min(ratios) > RATIO))
    return rows


def figure(per_model: pd.DataFrame, figures: Path) -> Path:
    """Test mse against c per task: ours (mean over seeds, band from the best to the worst seed)
    beside theirs (dashed: the mean of their 10 runs), both model kinds, log scale."""
    tasks = list(pd.unique(per_model.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, kind in enumerate(("positional", "standard")):
            g = per_model[(per_model.task == task) & (per_model.model_kind == kind)].groupby("c")["mse"]
            stats = g.agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, color=f"C{i}", label=f"{kind} (measured)")
            ax.fill_between(stats.index, stats["min"], stats["max"], color=f"C{i}", alpha=0.2, lw=0)
            if (task, kind) in PUBLISHED:
                ax.plot(PAPER_CS, PUBLISHED[task, kind], ls="--", color=f"C{i}", label=f"{kind} (paper)")
        ax.set(yscale="log", xlabel="c (test sub-intervals of [-c, c])", title=task)
    axes[0][0].set_ylabel("test mse (mean over seeds)")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle("de Luca et al.: positional vs standard attention out of distribution", fontsize="small")
    return plots.save(fig, per_model, figures / "deluca_mse_vs_c")[0]


def execute(rep: Reproduction, scale: str, out: Path, *, device=None, progress: bool = True):
    """Train the preset through the sweep engine into ``out/sweep``; ``ttb ood``'s tables and figure
    into ``out/ood``; rows and the mse-versus-c figure.

    The cpu scale trains on one thread (restored afterwards): its matrices (100 sequences of 9 tokens,
    width 32) are too small for a second thread to pay, and on a shared machine a second thread
    waiting for a busy core makes every step about ten times slower (measured on 2 loaded cores:
    22-27 ms per step on one thread, 206-356 ms on two)."""
    cfg = ood.parse_config(rep.presets[scale](), default_name=f"deluca_{scale}")
    threads = torch.get_num_threads()
    if scale == "cpu":
        torch.set_num_threads(1)
    try:
        per_model = ood.run(cfg, Path(out) / "sweep", device=device, progress=progress)
    finally:
        torch.set_num_threads(threads)
    paths = ood.write(Path(out) / "ood", ood.summarize(per_model), per_model, cfg)
    rows = measure(rep, scale, per_model, cfg.c_train, max(cfg.test_cs))
    return rows, [figure(per_model, Path(out) / "figures"), paths[3]]


FIDELITY = (
    Fidelity("tasks", "sum, min, sort, median, maxsub with cumulative = true (sort: false) (scale_params.json, "
             "data.py)", "cumsum, cummin, sort, cummedian, cum_max_subarray", "cumsum, cummin",
             "their median is torch.quantile 'midpoint': the mean of the two middle values, as ours"),
    Fidelity("n", "8", "8", "8"),
    Fidelity("training values", "each sequence uniform on [a, b], a, b the sorted pair of two U[-2, 2] draws "
             "(data.py generate_data_basic)", "task.sub_intervals = true, c_train = 2", "same"),
    Fidelity("training set", "30000 sequences drawn once (Dataset_Basic); DataLoader(shuffle=True): a new order "
             "each epoch, no replacement", "train.train_size = 30000", "2000", "cpu: minutes"),
    Fidelity("test sets", "1000 sequences per [-c, c], c = 2, 4, ..., 20; an interval inside [-2, 2] drawn again "
             "(reject_low/high); c = 2 without rejection", "test_cs = 4 ... 20 and the c_train row; eval.batch_size "
             "= 1000", "same",
             "theirs drawn once per run from the global RNG; ours from each seed's evaluation stream"),
    Fidelity("model", "model.py Transformer: Linear encoding; 4 layers (log2 n + 1) of attention, then "
             "MLP(cat[x, attn]) replacing x (no residual, no norm); ReLU MLP with one hidden layer of 64; "
             "Linear decoding; width 64, 2 heads",
             "width 64, n_heads 2, n_layers 4, d_mlp 64, mlp_input = concat", "width 32, d_mlp 32",
             "cpu: a quarter of the arithmetic"),
    Fidelity("attention", "positional: queries and keys from one-hot positions (identity_pe(n + 1)), values from "
             "the stream; standard: input [x, one-hot position], everything from the stream; no mask",
             "model kinds positional, standard; mask full", "same"),
    Fidelity("query/key width", "per head d_k = the width read (64 standard, 9 positional), scores / sqrt(d_k)",
             "d_head = width / heads = 32, scores / sqrt(32)", "16",
             "the forward pass has one head width; the init draws q, k with their bound, so initial scores are "
             "distributed as theirs; positional scores are full rank (9 x 9) either way"),
    Fidelity("scratch token", "one zero token appended at the end (num_additional_node = 1), outside the loss",
             "one zero token in front (scratch = true)", "same",
             "no mask and one-hot positions: positions are exchangeable, so front or end is a relabelling"),
    Fidelity("init", "nn.Linear defaults (U(+-1/sqrt(fan_in)), biases too); attention xavier_uniform, zero biases",
             "model.init = torch", "same"),
    Fidelity("optimiser", "torch.optim.Adam, lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0, no clipping, "
             "no warmup, no decay", "same (AdamW with weight decay 0 is Adam)", "lr 2e-3",
             "cpu: fewer steps, a larger rate"),
    Fidelity("plateau", "ReduceLROnPlateau(factor 0.9, patience 50, threshold 1e-4, min_lr 1e-6) on each epoch's "
             "summed training loss", "plateau_factor 0.9, plateau_patience 50, one log per epoch (30 steps)",
             "same, an epoch of 20 steps",
             "min_lr is not modelled: it never binds (at most 39 cuts: 5e-4 x 0.9^39 = 8e-6); sum or mean of the "
             "epoch's losses: the same relative test"),
    Fidelity("batch, steps", "1000; 2001 epochs x 30 batches = 60030 steps", "1000, 60030", "100, 2000 (100 epochs)",
             "cpu: minutes"),
    Fidelity("loss, metric", "nn.MSELoss over the n value positions (utils.get_loss); final test mse after epoch "
             "2000", "same", "same"),
    Fidelity("runs", "10 per task (\"runs\": 10); both kinds of a run train on the same batches and are tested on "
             "the same sets", "10 seeds", "3 seeds", "the same here: seed k gives both kinds the same training set, "
             "visiting order and test sequences (its data, shuffle and evaluation streams)"),
)

DELUCA = Reproduction(
    name="deluca",
    paper="de Luca et al. 2024, Positional Attention: Expressivity and Learnability of Algorithmic Computation "
          "(2410.01686)",
    claim="Transformers whose attention depends on positions only, trained on values in [-2, 2], keep a small error "
          "on values up to [-20, 20]; standard transformers of the same size, as good in distribution, do not.",
    code=CODE, presets={"cpu": cpu, "paper": paper}, fidelity=FIDELITY, minutes_cpu=5.0, execute=execute)
