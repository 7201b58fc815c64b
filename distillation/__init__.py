"""Condensing a training set into a few images.

- experts.py: expert networks and their trajectory buffers (replay_buffer_<k>.pt), written by buffer.py;
- matching.py: trajectory matching (MTT / TESLA) with learnable per-image weights (MU-WDD): the synthetic
  set, the meta-gradient, one distillation iteration, and how a distilled set is evaluated and saved;
- distiller.py: a whole distillation run (resume, evaluation schedule, best.pt, results), driven by distill.py;
- condensers.py: the cheap baselines distillation must beat (random, herding, k-center, DM, Blend), driven
  by condense.py.
Every producer writes the same distilled.pt, so every consumer takes any of them.
"""
