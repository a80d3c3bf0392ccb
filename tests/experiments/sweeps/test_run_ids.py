"""Run ids are a public contract: users' stores and scripts refer to them. The ids of every shipped
sweep config are pinned here (the number of runs, the first id, and a digest of all of them, as the
configs expanded when the ids were first published); a change to hashing, defaults or the resolved
config that moved any of them fails this test. Four configs were fixed to their papers' setups
(lsa_one_layer, gpt2_interleaved_cpu / _gpu, task_pool_gpu): their runs changed, so their ids did."""

import hashlib

import pytest
from support import ROOT

from experiments.sweeps.spec import load_sweep

CONFIGS = ROOT / "experiments" / "configs"
PINNED = {  # file: (runs, digest of "id id id ...", first id)
    "gpt2_interleaved_cpu.toml": (6, "f5864f5e211da1c6", "21cd45291af2"),  # Garg et al.'s layout, no clipping
    "gpt2_interleaved_gpu.toml": (3, "60a5800f8c62ed2a", "fd05efde3464"),  # Garg et al.'s setting
    "linear_attention_layers_cpu.toml": (8, "8820c8a5c5fc6e33", "ad63385aae9e"),
    "linear_attention_layers_gpu.toml": (18, "7a098a66b2ae6182", "47cd80e68884"),
    "lsa_one_layer.toml": (3, "c21f3cc05b1e7e58", "27a0a097f835"),  # von Oswald et al.'s setting
    "noise_mixture_cpu.toml": (4, "240536fb39367508", "bcc69c19ed8c"),
    "noise_mixture_gpu.toml": (9, "7e070037ed187328", "465578a8cc19"),
    "noisy_regression_cpu.toml": (6, "5e8c0747175e5bf4", "63e8786178a6"),
    "noisy_regression_gpu.toml": (60, "e09cbacf04b3cafa", "b69da3af92fc"),
    "regression_cpu.toml": (6, "572aacbc15983dc2", "fee14710cb07"),
    "regression_gpu.toml": (16, "0afcada073edc3b0", "a8eb98e89424"),
    "representation_cpu.toml": (2, "824b064cdd641c40", "886a7b9f5885"),
    "representation_gpu.toml": (18, "23f055d8ec5ed2b4", "dac5026a6094"),
    "task_pool_cpu.toml": (5, "3c842a6c410a82f0", "85f315f876af"),
    "task_pool_gpu.toml": (30, "9232d56fb733dd68", "cf5eea888b0e"),  # Raventos et al.'s setting
    "logistic_cpu.toml": (4, "4f4c8cfc0ba9a733", "ae299474af76"),
    "logistic_gpu.toml": (6, "bdeefb24388dec33", "dd14de56a9f5"),
    "looped_cpu.toml": (2, "90f38ea473c38243", "8ea22e39cb5a"),
    "looped_gpu.toml": (3, "f528a8a5bff457be", "b824e3957dc9"),
    "mixture_cpu.toml": (3, "fd040176cfc1d638", "b3709b8e092f"),
    "mixture_gpu.toml": (3, "d3776880bb532821", "16b97f9882f6"),
    "quadratic_cpu.toml": (4, "e767f33e1e0ee43a", "4c25113b863b"),
    "quadratic_gpu.toml": (6, "a42ee639142818da", "a745352cb030"),
    "relu2nn_cpu.toml": (4, "ee0c5e831541f837", "ccde04d27223"),
    "relu2nn_gpu.toml": (3, "9cb5785a76d17a4d", "b1653d3bdd4a"),
    "tree_cpu.toml": (4, "930ba35449fc9c0e", "2f6ef12498eb"),
    "tree_gpu.toml": (3, "e6cf7762ce4a2cda", "8aa4f508205f"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_run_ids_of_a_shipped_sweep_config_do_not_change(name):
    ids = [run.run_id for run in load_sweep(CONFIGS / name).runs]
    digest = hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16]
    assert (len(ids), digest, ids[0]) == PINNED[name]
