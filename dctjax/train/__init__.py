"""Reusable training infrastructure shared by the model-family train loops.

Modules: `sharding` (mesh, parameter/batch shardings, multi-host start), `state` (TrainState, EMA,
born-sharded init), `optim` (the reference AdamW + warm-up, norms), `checkpoint` (orbax manager with
the grain iterator, preemption, weights-only init), `metrics` (clu or JSON-lines writers, NaN guard),
`schedule` (durations in steps, periodic actions). Import the submodules directly.
"""
