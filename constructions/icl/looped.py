"""Looped constructions: one block applied b times = b iterations of GD, preconditioned GD or GD++.

Claim (Giannou et al. 2023; Yang et al. 2023). The layers of :mod:`constructions.icl.gd`,
:mod:`constructions.icl.preconditioned_gd` (with one preconditioner P for every step) and
:mod:`constructions.icl.gd_plus_plus` are all the same block: layer l never depends on l. So the
weights of ONE such block, run under ``ModelConfig(n_layers=1, n_loops=b)`` (the model applies the
n_layers blocks b times with shared weights), are the b-step construction: the b applied blocks are
b copies of the unlooped construction's layers, and every derivation carries over verbatim. After
applied block l the y slots hold the residuals of the l-th iterate, the readout -y_q is w_l.x_q
(GD++: also the whitened x slots), exactly as in the unlooped modules.

What looping adds is that depth is no longer part of the weights: ``forward(..., loops=b2)`` runs
b2 iterations with the same block. :func:`loop_errors` therefore checks every applied block at the
built loop count, then runs EXTRA_LOOPS more loops and checks the extra blocks against the
reference's later iterates. The Newton iteration, whose unlooped form has a start and a predict
layer around the repeated ones, is in :mod:`constructions.icl.looped_newton`.

Exactness: exact, on the unlooped constructions' domains (the samplers are theirs): every step is
a contraction there, so the extra loops add no round-off growth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from constructions import model as M
from constructions.check.contract import Built, Case, Construction, positive_int, require
from constructions.icl import gd, gd_plus_plus, preconditioned_gd
from constructions.icl.layerwise import EXAMPLES, QUERY, READOUT, Claim, claim_error
from constructions.icl.preconditioned_gd import gd_claims
from constructions.reference import algorithms
from constructions.tokens import example_tokens

EXTRA_LOOPS = 2  # the check also runs this many loops more than built, against the later iterates


def looped(built: Built, group: int, n_loops: int) -> Built:
    """The first ``group`` blocks of an unlooped construction as one group applied n_loops times
    (embedding and readout kept): the looped form of a construction whose layers repeat."""
    positive_int("group", group)
    positive_int("n_loops", n_loops)
    require(built.cfg.n_loops == 1, f"looped() takes an unlooped construction, got n_loops={built.cfg.n_loops}")
    require(group <= built.cfg.n_layers, f"group={group} exceeds the construction's n_layers={built.cfg.n_layers}")
    cfg = dataclasses.replace(built.cfg, n_layers=group, n_loops=n_loops)
    return Built(cfg, dataclasses.replace(built.weights, blocks=list(built.weights.blocks[:group])))


def unroll(built: Built, loops: int | None = None) -> Built:
    """The same function with the loop written out: n_layers * loops blocks (the shared tensors
    repeated) and n_loops = 1, for tools that read a model layer by layer (the symbolic pass,
    per-layer probes). ``loops`` defaults to the config's n_loops."""
    cfg = built.cfg
    loops = cfg.n_loops if loops is None else loops
    positive_int("loops", loops)
    require(not cfg.input_injection, "unroll: input_injection adds the embedding between loops, which "
                                      "an unlooped model cannot express")
    require(cfg.layer_attention is None, "unroll: per-layer attention kinds (layer_attention) are not supported")
    unrolled = dataclasses.replace(cfg, n_layers=cfg.n_layers * loops, n_loops=1)
    return Built(unrolled, dataclasses.replace(built.weights, blocks=list(built.weights.blocks) * loops))


def _errors_at(built: Built, tokens: Tensor, claims: Sequence[Sequence[Claim]], loops: int) -> list[float]:
    """Worst claim error after each applied block (index 0: the embedding) of a run of ``loops`` loops."""
    run = M.forward(built.cfg, built.weights, tokens, residuals=True, loops=loops)
    if len(claims) != len(run.residuals):
        raise ValueError(f"{len(claims)} blocks of claims for {len(run.residuals)} residual streams "
                         f"({built.cfg.n_layers} blocks x {loops} loops + the embedding)")
    return [max(claim_error(built, h, c) for c in block_claims) for h, block_claims in zip(run.residuals, claims)]


def loop_errors(built: Built, tokens: Tensor, claims: Sequence[Sequence[Claim]]) -> dict[str, float]:
    """claims[i]: what the stream holds after applied block i (0: the embedding), for
    n_loops + EXTRA_LOOPS loops. Runs the model at its own loop count ("layer i" for i = 0..L, with
    L = n_layers * n_loops applied blocks) and with EXTRA_LOOPS more loops ("layer L+k", the blocks
    beyond the first run, labelled relative to L so that cases of different depths share labels):
    the same weights must carry on iterating."""
    b, group = built.cfg.n_loops, built.cfg.n_layers
    n_base = group * b + 1
    base = _errors_at(built, tokens, claims[:n_base], b)
    longer = _errors_at(built, tokens, claims, b + EXTRA_LOOPS)
    out = {f"layer {i}": err for i, err in enumerate(base)}
    out.update({f"layer L+{i - n_base + 1}": longer[i] for i in range(n_base, len(longer))})
    return out


# ----------------------------------------------------------------------------------------------
# GD and preconditioned GD: the y slots hold the residuals of the l-th iterate after block l


def build_preconditioned_gd(d: int, n_steps: int, P: Tensor) -> Built:
    """One step w <- w - P grad as one block, looped n_steps times. P: (d, d), shared by every
    step (a preconditioner per step is not a loop: use the unlooped construction)."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    P = torch.as_tensor(P, dtype=torch.float64)
    require(P.shape == (d, d), f"P must have shape ({d}, {d}) (one preconditioner for every loop), got {tuple(P.shape)}")
    return looped(preconditioned_gd.build(d, 1, P), group=1, n_loops=n_steps)


def build_gd(d: int, n_steps: int, eta: float) -> Built:
    """One GD step (step eta) as one block, looped n_steps times."""
    positive_int("n_steps", n_steps)
    return looped(gd.build(d, 1, eta), group=1, n_loops=n_steps)


def _preconditioned_errors(built: Built, case: Case, P: Tensor) -> dict[str, float]:
    steps = case.params["n_steps"] + EXTRA_LOOPS
    iterates = algorithms.preconditioned_gd(case.x, case.y, P=P, n_steps=steps)  # (steps + 1, B, d)
    tokens = example_tokens(case.x, case.y, case.x_query)
    return loop_errors(built, tokens, [gd_claims(case, w_l) for w_l in iterates])


def gd_errors(built: Built, case: Case) -> dict[str, float]:
    """Per applied block l (also the EXTRA_LOOPS extra ones): gd's claims for the l-th GD iterate."""
    d, eta = case.params["d"], case.params["eta"]
    return _preconditioned_errors(built, case, eta * torch.eye(d, dtype=torch.float64))


def preconditioned_gd_errors(built: Built, case: Case) -> dict[str, float]:
    """Per applied block l (also the EXTRA_LOOPS extra ones): the claims for the l-th iterate."""
    return _preconditioned_errors(built, case, case.params["P"])


# ----------------------------------------------------------------------------------------------
# GD++: a GD step head and a whitening head, both in the one block


def build_gd_plus_plus(d: int, n_steps: int, eta: float, gamma: float) -> Built:
    """One GD++ layer (GD step eta, whitening gamma) as one block, looped n_steps times."""
    positive_int("n_steps", n_steps)
    return looped(gd_plus_plus.build(d, 1, eta, gamma), group=1, n_loops=n_steps)


def gd_plus_plus_errors(built: Built, case: Case) -> dict[str, float]:
    """Per applied block l: the readout, residual and x slots against GD++'s state after l steps."""
    p = case.params
    steps = p["n_steps"] + EXTRA_LOOPS
    ref = algorithms.gd_plus_plus(case.x, case.y, case.x_query, eta=p["eta"], gamma=p["gamma"], n_steps=steps)
    claims = [[Claim(READOUT, QUERY, ref.prediction[t]), Claim("y", EXAMPLES, ref.r[t]),
               Claim("x", EXAMPLES, ref.x[t]), Claim("x", QUERY, ref.x_query[t])] for t in range(steps + 1)]
    return loop_errors(built, example_tokens(case.x, case.y, case.x_query), claims)


_BOUND_NOTE = ("as the unlooped construction: float64 round-off of a contraction, ~ d N eps ~ 1e-13, also over "
               f"the {EXTRA_LOOPS} extra loops")

GD = Construction(
    name="gd_looped", exactness="exact", algorithm="algorithms.gd",
    summary="one linear-attention block looped b times = b GD steps; b + 2 loops = b + 2 steps",
    sample=gd.sample, build=lambda case: build_gd(**case.params), errors=gd_errors,
    bound=gd.CONSTRUCTION.bound, bound_note=_BOUND_NOTE,
)
PRECONDITIONED_GD = Construction(
    name="preconditioned_gd_looped", exactness="exact", algorithm="algorithms.preconditioned_gd",
    summary="one block looped b times = b steps of w <- w - P grad; b + 2 loops = b + 2 steps",
    sample=preconditioned_gd.sample, build=lambda case: build_preconditioned_gd(**case.params),
    errors=preconditioned_gd_errors, bound=preconditioned_gd.CONSTRUCTION.bound, bound_note=_BOUND_NOTE,
)
GD_PLUS_PLUS = Construction(
    name="gd_plus_plus_looped", exactness="exact", algorithm="algorithms.gd_plus_plus",
    summary="one two-head block looped b times = b GD++ steps; b + 2 loops = b + 2 steps",
    sample=gd_plus_plus.sample, build=lambda case: build_gd_plus_plus(**case.params),
    errors=gd_plus_plus_errors, bound=gd_plus_plus.CONSTRUCTION.bound, bound_note=_BOUND_NOTE,
)
CONSTRUCTIONS = (GD, PRECONDITIONED_GD, GD_PLUS_PLUS)
