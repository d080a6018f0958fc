"""The training engine: config schema, trainer loop, checkpoints, DDP set-up, run folders.

Modules: ``config`` / ``schema`` (YAML + overrides -> validated dict), ``pipeline`` (teacher /
student / baseline runs of a job), ``trainer`` (the epoch loop), ``run_dir`` (start, resume or
reuse a run folder), ``checkpoint`` (atomic files), ``distributed``, ``amp``, ``optim``, ``rng``,
``logs``, ``build`` (config -> models and distiller), ``errors``.
"""
