"""The training loop of one run: epochs of distiller steps, evaluation, logs and checkpoints.

Each epoch: ``distiller.on_epoch_start`` -> training steps (autocast, GradScaler for fp16, lr
stepped per iteration) -> ``on_epoch_end`` -> top-1/top-5 on the test split (``evaluation``) ->
``checkpoint.pt`` written atomically with the run's state (``run_state``) and ``log.csv`` /
TensorBoard. A run killed mid-epoch therefore loses at most that epoch, and ``--resume`` continues
bit-for-bit on the same device and process count.

A distiller may ask for extra passes over the training data before an epoch (``phase_passes``,
e.g. TST's augmentation search): each pass calls ``phase_step`` per batch, is logged to
``phase_log.csv`` / TensorBoard (``tb/phase``) and is followed by a checkpoint, so a run killed
inside a phase loses at most one pass. Training epochs and phase passes are both one
``loader_pass.run_pass`` over the training loader.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tskd_fast.data import DataSplits, eval_loader, train_loader
from tskd_fast.distillers import Distiller, RunInfo
from tskd_fast.engine.amp import amp_dtype, autocast, grad_scaler
from tskd_fast.engine.compile import compile_teacher, student_step
from tskd_fast.engine.distributed import DistContext
from tskd_fast.engine.evaluation import evaluate
from tskd_fast.engine.loader_pass import phase_key, run_pass
from tskd_fast.engine.logs import TensorBoardLog, say
from tskd_fast.engine.normalisation import normalisation_of
from tskd_fast.engine.optim import build_optimizer, build_scheduler
from tskd_fast.engine.peak_memory import PeakMemory
from tskd_fast.engine.rng import restore_rng
from tskd_fast.engine.run_state import (
    Optimisation,
    RunResult,
    TrainState,
    gather_rng,
    save_checkpoint,
    save_final,
)
from tskd_fast.errors import UserError


class Trainer:
    """Trains ``distiller`` on ``splits`` as configured by the resolved config ``cfg``.

    Only rank 0 writes files (into ``run_dir``) and shows progress; every rank computes.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_dir: str,
        distiller: Distiller,
        splits: DataSplits,
        ctx: DistContext,
        label: str,
    ) -> None:
        self.cfg, self.run_dir, self.distiller, self.splits, self.ctx, self.label = (
            cfg,
            run_dir,
            distiller,
            splits,
            ctx,
            label,
        )
        self.solver, self.tcfg = cfg["solver"], cfg["trainer"]
        self.device = ctx.device
        self.dtype = amp_dtype(self.tcfg["amp"], self.device)
        self.show = self.tcfg["progress"] and ctx.is_main
        world = ctx.world_size
        if self.solver["batch_size"] % world:
            raise UserError(
                f"solver.batch_size={self.solver['batch_size']} is the global batch and must be divisible by the "
                f"number of processes ({world})"
            )
        workers = cfg["dataset"]["num_workers"]
        pin = self.device.type == "cuda"
        try:
            self.train_loader = train_loader(
                splits.train,
                self.solver["batch_size"] // world,
                workers,
                cfg["experiment"]["seed"],
                ctx.rank,
                world,
                pin,
            )
        except ValueError as exc:
            raise UserError(f"{label}: {exc}; lower solver.batch_size or enlarge the training set") from None
        self.test_loader = eval_loader(
            splits.test, self.tcfg["eval_batch_size"], workers, ctx.rank, world, pin
        )
        self.iters_per_epoch = len(self.train_loader)
        if self.device.type == "cuda":
            # Fixed input shapes: let cuDNN pick the fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True

    # -- set-up -----------------------------------------------------------------------------------
    def _prepare_modules(self) -> None:
        d = self.distiller
        d.to(self.device)
        if self.tcfg["channels_last"]:
            d.to(memory_format=torch.channels_last)
        if self.ctx.enabled:
            ddp_kwargs: dict[str, Any] = {"find_unused_parameters": self.tcfg["find_unused_parameters"]}
            if self.device.type == "cuda":
                ddp_kwargs["device_ids"] = [self.device.index]
            sync = self.tcfg["sync_bn"] and self.device.type == "cuda"

            def wrap(module: nn.Module) -> nn.Module:
                if not any(p.requires_grad for p in module.parameters()):
                    return module
                if sync:
                    module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
                return DistributedDataParallel(module, **ddp_kwargs)

            # Only the student and the method's trainable modules; the frozen teacher is not wrapped.
            d.wrap_trainable(wrap)
        # trainer.compile / teacher.compile (tskd_fast.engine.compile); the modules stay unwrapped.
        self.step = student_step(d, self.tcfg["compile"])
        compile_teacher(d.teacher, self.cfg["teacher"]["compile"])

    def _bind_run(self) -> None:
        stats = normalisation_of(self.splits.train)
        self.distiller.bind_run(
            RunInfo(
                device=self.device,
                amp_dtype=self.dtype,
                run_dir=self.run_dir if self.ctx.is_main else None,
                mean=tuple(stats[0]) if stats else None,
                std=tuple(stats[1]) if stats else None,
                world_size=self.ctx.world_size,
            )
        )

    def _optimisation(self) -> Optimisation:
        optimizer = build_optimizer(self.distiller.param_groups(), self.solver)
        return Optimisation(
            optimizer,
            build_scheduler(optimizer, self.solver, self.iters_per_epoch),
            grad_scaler(self.device, self.dtype),
        )

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, state: Mapping[str, Any] | None = None) -> RunResult:
        """Train from scratch (``state`` None) or continue from a loaded ``checkpoint.pt`` state."""
        start_time = time.time()
        d, ctx = self.distiller, self.ctx
        if state is not None:
            # Load before DDP wrapping; DDP then broadcasts rank 0's (identical) weights.
            d.load_checkpoint_state(state["distiller"])
        self._prepare_modules()
        self._bind_run()
        optim = self._optimisation()
        run = TrainState()
        if state is not None:
            optim.load_state_dict(state)
            run = TrainState.from_checkpoint(state)
            if state.get("world_size", 1) != ctx.world_size and ctx.is_main:
                say(
                    f"{self.label}: resuming with {ctx.world_size} processes (saved with "
                    f"{state.get('world_size')}): the data order differs from an uninterrupted run"
                )
            if ctx.is_main:
                say(f"{self.label}: resuming {self.run_dir} after epoch {run.epoch}/{self.solver['epochs']}")
        elif d.teacher is not None and d.needs_teacher():
            run.teacher_top1 = self._evaluate(d.teacher)["top1"]
            if ctx.is_main:
                say(f"{self.label}: teacher top-1 on the test split: {run.teacher_top1:.2f}%")
        if state is not None:
            # Last, after everything that draws random numbers during set-up.
            rng = state["rng"]
            restore_rng(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
        wall_before = run.wall_s
        memory = PeakMemory(self.device)
        memory.reset()

        def checkpoint(improved: bool) -> None:
            run.wall_s = wall_before + time.time() - start_time
            run.note_peak_memory(memory.peak())
            rng = gather_rng(ctx)
            if ctx.is_main:
                save_checkpoint(self.run_dir, self.cfg, d, optim, run, rng, ctx.world_size, improved)

        tb_on = self.tcfg["tensorboard"] and ctx.is_main
        tb = TensorBoardLog(self.run_dir, tb_on, run.epoch)
        tb_phase: TensorBoardLog | None = None  # opened on the first phase pass (most methods have none)
        epochs, stop_after = self.solver["epochs"], self.tcfg["stop_after"]
        run_epochs = 0
        try:
            while run.epoch < epochs and (stop_after is None or run_epochs < stop_after):
                passes = d.phase_passes(run.epoch, epochs)
                while run.phase_done < passes:
                    prow = self._phase_pass(run.epoch, run.phase_done, passes)
                    run.phase_done += 1
                    run.phase_history.append(prow)
                    checkpoint(improved=False)
                    if ctx.is_main:
                        if tb_phase is None:
                            tb_phase = TensorBoardLog(self.run_dir, tb_on, len(run.phase_history), "phase")
                        tb_phase.log(prow, len(run.phase_history), group="phase")
                        say(
                            f"{self.label} phase pass {run.phase_done}/{passes} before epoch {run.epoch + 1}  "
                            f"loss {prow['loss']:.4f}  ({prow['time_s']:.1f}s)"
                        )
                t0 = time.time()
                row = self._train_epoch(run.epoch, optim)
                d.on_epoch_end(run.epoch)
                test = self._evaluate(d.eval_model())
                row.update({f"test_{k}": v for k, v in test.items()})
                row["time_s"] = time.time() - t0
                improved = run.end_epoch(row)
                run_epochs += 1
                checkpoint(improved)
                if ctx.is_main:
                    tb.log(row, run.epoch)
                    top5 = f"  top-5 {test['top5']:.2f}" if "top5" in test else ""
                    say(
                        f"{self.label} epoch {run.epoch}/{epochs}  loss {row['train_loss']:.4f}  "
                        f"test top-1 {test['top1']:.2f}{top5}  lr {row['lr']:.4g}  ({row['time_s']:.1f}s)"
                    )
        finally:
            tb.close()
            if tb_phase is not None:
                tb_phase.close()
        if run.epoch >= epochs and ctx.is_main:
            save_final(self.run_dir, self.cfg, d, run)
        ctx.barrier()
        run.wall_s = wall_before + time.time() - start_time
        return RunResult.from_state(self.label, self.run_dir, self.cfg, run)

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate(model, self.test_loader, self.ctx, self.tcfg["channels_last"], self.dtype)

    def _phase_pass(self, epoch: int, index: int, passes: int) -> dict[str, Any]:
        """Pass ``index`` of the distiller's extra phase before ``epoch``: ``phase_step`` per batch;
        returns the log row (means over every process of the step values, plus the distiller's)."""
        d = self.distiller
        t0 = time.time()
        d.train()
        d.on_phase_pass_start(epoch, index, passes)

        def step(images: Tensor, target: Tensor, _: int) -> dict[str, Tensor]:
            n = target.numel()
            return {k: v.detach().float() * n for k, v in d.phase_step(images, target, epoch, index).items()}

        totals = run_pass(
            self.train_loader,
            step,
            key=phase_key(epoch, index),
            seed=self.cfg["experiment"]["seed"],
            ctx=self.ctx,
            channels_last=self.tcfg["channels_last"],
            desc=f"{self.label} phase {index + 1}/{passes} before {epoch + 1}",
            show=self.show,
        )
        means = totals.means()
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"{self.label}: {bad[0]} became {means[bad[0]]} in phase pass {index + 1} before epoch {epoch + 1} "
                "(the checkpoint of the previous pass is kept)"
            )
        row: dict[str, Any] = {"before_epoch": epoch + 1, "pass": index + 1, **means}
        row.update(d.on_phase_pass_end(epoch, index, passes, means))
        row["time_s"] = time.time() - t0
        return row

    def _train_step(
        self, images: Tensor, target: Tensor, epoch: int, progress: float, optim: Optimisation
    ) -> dict[str, Tensor]:
        """One optimiser step on a batch; returns the batch sums of the loss, of each weighted loss
        term and of the correct predictions."""
        with autocast(self.device, self.dtype):
            logits, losses = self.step(images, target, epoch=epoch, progress=progress)
        loss = sum(v.float() for v in losses.values())
        optim.optimizer.zero_grad(set_to_none=True)
        optim.scaler.scale(loss).backward()
        optim.scaler.step(optim.optimizer)
        optim.scaler.update()
        optim.scheduler.step()
        n = target.numel()
        sums = {name: value.detach().float() * n for name, value in (("loss", loss), *losses.items())}
        sums["correct"] = (logits.detach().argmax(1) == target).sum().float()
        return sums

    def _train_epoch(self, epoch: int, optim: Optimisation) -> dict[str, Any]:
        d = self.distiller
        d.train()
        d.on_epoch_start(epoch, self.solver["epochs"])
        lr = optim.lr
        epochs, iters = self.solver["epochs"], self.iters_per_epoch

        def step(images: Tensor, target: Tensor, index: int) -> dict[str, Tensor]:
            return self._train_step(images, target, epoch, (epoch + index / iters) / epochs, optim)

        def postfix(sums: dict[str, Tensor], n: int) -> dict[str, str]:
            return {"loss": f"{sums['loss'].item() / n:.3f}", "lr": f"{optim.lr:.3g}"}

        totals = run_pass(
            self.train_loader,
            step,
            key=epoch,
            seed=self.cfg["experiment"]["seed"],
            ctx=self.ctx,
            channels_last=self.tcfg["channels_last"],
            desc=f"{self.label} {epoch + 1}/{epochs}",
            show=self.show,
            postfix=postfix,
        )
        means = totals.means()
        del means["correct"]
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(
                f"{self.label}: the training loss became {means['loss']} in epoch {epoch + 1}; lower solver.lr "
                "(the checkpoint of the previous epoch is kept)"
            )
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": means.pop("loss")}
        row.update({f"train_{k}": v for k, v in means.items()})
        row["train_top1"] = 100.0 * totals.sums["correct"] / totals.rows
        row.update(d.log_values())
        return row


__all__ = ["Trainer"]
