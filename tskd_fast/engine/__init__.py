"""The training engine: configs, the trainer loop, checkpoints, DDP set-up, run folders.

Modules: ``config`` (YAML + overrides -> validated dict, over ``tskd_fast.schema``), ``pipeline``
(teacher / student / baseline runs of a job), ``trainer`` (the epoch loop), ``loader_pass`` (one
pass over the training loader, for epochs and phase passes), ``evaluation`` (test accuracy),
``run_state`` (what a checkpoint holds and the files written from it), ``run_dir`` (start, resume
or reuse a run folder), ``checkpoint`` (atomic files), ``distributed``, ``amp``, ``optim``,
``rng``, ``logs``, ``normalisation``, ``peak_memory``, ``build`` (config -> models and distiller),
``compile`` (``trainer.compile`` / ``teacher.compile``: the step under torch.compile),
and the commands beside training: ``checkpoint_eval`` (``tskd-fast eval``) and ``compare``
(``tskd-fast compare``).
"""
