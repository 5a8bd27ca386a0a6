"""The scalar names the README promises to every logger: per-layer values as "<metric>/<layer>",
averages over the model as "model/<metric>"."""

from __future__ import annotations

LAYER_METRICS = (
    "alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank", "frame_potential",
    "frame_potential_normalized", "rank_loss", "lambda_min", "num_spikes", "mp_softrank",
    "relative_delta", "delta_W", "num_fingers", "raw_alpha", "num_traps", "rand_distance",
    "detX_num", "ERG_gap",
)  # fmt: skip
AVERAGED = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")
