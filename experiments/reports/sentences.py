"""What a page's numbers say, in sentences computed from them (no number is typed in by hand).

Every function takes the tidy rows a section shows and returns one or two sentences. The words
for a relation come from the fitted numbers: GD's best step growing by a roughly constant factor
per layer is "exponential" (as Fu et al. 2023 report for GD), Newton's best iteration growing by a
roughly constant amount is "linear" (as they report for Newton).
"""

from __future__ import annotations

import math

import pandas as pd

LEARNED_BELOW = 0.5  # a model learned in context if its normalised error at the full context is below this


def _list(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def checks(table: pd.DataFrame) -> str:
    """"All 20 constructions pass their checks; ..." with the closest call named."""
    passed = table[table.passed.astype(bool)]
    exact = passed[passed.exactness == "exact"]
    text = (f"All {len(table)} constructions pass their checks." if len(passed) == len(table) else
            f"{len(passed)} of {len(table)} constructions pass their checks; failing: "
            f"{_list(list(table[~table.passed.astype(bool)].name))}.")
    if len(exact):
        worst = exact.loc[exact.error.idxmax()]
        text += (f" The exact ones agree with their algorithms to round-off: the largest error is {worst['name']}'s, "
                 f"{worst.error:.1e} against a bound of {worst.bound:.0e}.")
    return text


def learned(nmse: float) -> bool:
    return nmse == nmse and nmse < LEARNED_BELOW


def sweep(status: pd.DataFrame, seconds: float) -> list[str]:
    ok = status[[learned(v) for v in status.eval_nmse]]
    text = [f"{len(status)} models trained in {seconds:.0f} s, those of one shape as one batch."]
    if len(ok) == len(status):
        text.append(f"All of them learned in context (normalised error at the full context below {LEARNED_BELOW}; "
                    "predicting 0 scores 1).")
    else:
        text.append(f"{len(ok)} learned in context (normalised error at the full context below {LEARNED_BELOW}; "
                    f"predicting 0 scores 1); {len(status) - len(ok)} did not and are flagged below and left out of "
                    "the comparison.")
    return text


def not_learned(status: pd.DataFrame) -> list[str]:
    bad = status[[not learned(v) for v in status.eval_nmse]]
    return [f"Did not learn: {row.model} (normalised error {row.eval_nmse:.2f} at the full context)."
            if row.eval_nmse == row.eval_nmse else f"Did not learn: {row.model} (no error measured: the run did not "
            "finish)." for row in bad.itertuples()]


def _growth(name: str, layers: list[int], its: list[int], entry: dict) -> str:
    """How the best iteration grows with depth, in words."""
    words = f"layer{'s' if len(layers) > 1 else ''} {_list(layers)} match{'' if len(layers) > 1 else 'es'} " \
            f"{'GD step' if name == 'gd' else 'Newton iteration'}{'s' if len(its) > 1 else ''} {_list(its)}"
    if len(its) < 2 or its[-1] <= its[0]:
        return words
    if name == "gd" and entry.get("log_iterations_per_layer") is not None:
        factor = math.exp(entry["log_iterations_per_layer"])
        return words + f" (about x{factor:.1f} per layer: exponential, as Fu et al. report for GD)"
    if name == "newton" and entry.get("iterations_per_layer") is not None:
        return words + f" (about +{entry['iterations_per_layer']:.1f} per layer: linear, as Fu et al. report)"
    return words


def _carried(summary: dict) -> str:
    """When a few prompts carry the mean error (ten times the median or more), say so: the table of
    trained models (other prompts) and this sentence would otherwise seem to disagree."""
    median = summary.get("median_nmse", math.nan)
    if not median > 0 or summary["nmse"] < 10 * median:
        return ""
    return f"; a mean carried by a few prompts: the median prompt's is {median:.2g}"


def model(summary: dict) -> str:
    """One sentence per model: the closest algorithm, then how GD's and Newton's best iterations
    grow with the layer."""
    it = summary.get("closest_iteration")
    step = "" if it is None else (f" step {it}" if summary["closest_algorithm"].startswith("gd") else f" iteration {it}")
    text = (f"{summary['model']}: closest to {summary['closest_algorithm']}{step} (prediction difference "
            f"{summary['prediction_difference']:.2g}, gradient cosine {summary['model_cosine']:.3f}, "
            f"normalised error {summary['nmse']:.2f}{_carried(summary)})")
    parts = []
    for name in ("gd", "newton"):
        entry = summary["algorithms"].get(name)
        if entry and len(entry["best_iteration_per_layer"]) > 1:
            its = entry["best_iteration_per_layer"][1:]
            parts.append(_growth(name, list(range(1, len(its) + 1)), its, entry))
    return text + (": " + "; ".join(parts) if parts else "") + "."


def approximation(slopes: pd.DataFrame) -> str:
    stated = slopes[slopes.stated_slope.notna()]
    if not len(stated):
        return "The fitted slopes of log error are below."
    gaps = (stated.slope - stated.stated_slope).abs()
    worst = stated.loc[gaps.idxmax()]
    return (f"{len(stated)} construction curves have a slope their theorem states; the fitted slopes are within "
            f"{gaps.max():.2f} of it (the farthest: {worst.model} on {worst.target}, {worst.slope:.2f} against "
            f"{worst.stated_slope:.2f}). Trained models have no stated slope; theirs are measured.")
