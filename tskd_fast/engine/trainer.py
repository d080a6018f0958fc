"""The training loop of one run: epochs of distiller steps, evaluation, logs and checkpoints.

Each epoch: ``distiller.on_epoch_start`` -> training steps (autocast, GradScaler for fp16, lr
stepped per iteration) -> ``on_epoch_end`` -> top-1/top-5 on the test split -> ``checkpoint.pt``
written atomically (model, optimiser, scheduler, scaler, RNG states, epoch, history, distiller
state) and ``log.csv`` / TensorBoard. A run killed mid-epoch therefore loses at most that epoch,
and ``--resume`` continues bit-for-bit on the same device and process count.

A distiller may ask for extra passes over the training data before an epoch (``phase_passes``,
e.g. TST's augmentation search): each pass calls ``phase_step`` per batch, is logged to
``phase_log.csv`` / TensorBoard (``tb/phase``) and is followed by a checkpoint, so a run killed
inside a phase loses at most one pass.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tskd_fast.data import DataSplits, eval_loader, train_loader
from tskd_fast.distillers import Distiller, RunInfo, unwrap
from tskd_fast.engine import checkpoint as ckpt
from tskd_fast.engine.amp import amp_dtype, autocast, grad_scaler
from tskd_fast.engine.compile import compile_teacher, student_step
from tskd_fast.engine.config import dump, identity
from tskd_fast.engine.distributed import DistContext
from tskd_fast.engine.errors import UserError
from tskd_fast.engine.logs import TensorBoardLog, say, write_csv
from tskd_fast.engine.normalisation import normalisation_of
from tskd_fast.engine.optim import build_optimizer, build_scheduler
from tskd_fast.engine.rng import capture_rng, restore_rng


@dataclass
class RunResult:
    """Outcome of one run (the numbers are the test split's, in %)."""

    label: str
    run_dir: str
    model: str
    method: str
    epochs_done: int
    epochs: int
    top1: float | None
    top5: float | None
    best_top1: float | None
    teacher_top1: float | None
    wall_s: float
    reused: bool = False

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs

    @classmethod
    def from_history(
        cls,
        label: str,
        run_dir: str,
        cfg: Mapping[str, Any],
        history: list[dict[str, Any]],
        epochs_done: int,
        epochs: int,
        best_top1: float | None,
        teacher_top1: float | None,
        wall_s: float,
        reused: bool = False,
    ) -> RunResult:
        """The result of a run from its per-epoch history (the last row's test accuracies)."""
        last = history[-1] if history else {}
        return cls(
            label=label,
            run_dir=run_dir,
            model=cfg["student"]["name"],
            method=cfg["distiller"]["name"],
            epochs_done=epochs_done,
            epochs=epochs,
            top1=last.get("test_top1"),
            top5=last.get("test_top5"),
            best_top1=best_top1,
            teacher_top1=teacher_top1,
            wall_s=wall_s,
            reused=reused,
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    ctx: DistContext,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean CE of ``model`` over every rank's shard of ``loader``.

    Returns {"loss", "top1", "top5"} summed exactly over ranks (top5 only with >= 5 classes).
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # loss sum, top1, top5, count
    with_top5 = True
    for images, target in loader:
        images = images.to(ctx.device, non_blocking=True)
        target = target.to(ctx.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, dtype):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        with_top5 = logits.shape[1] >= 5
        top = logits.topk(k, dim=1).indices
        hits = top.eq(target[:, None])
        totals[0] += nn.functional.cross_entropy(logits, target, reduction="sum").double()
        totals[1] += hits[:, 0].sum()
        totals[2] += hits.any(dim=1).sum()
        totals[3] += target.numel()
    ctx.all_reduce_sum(totals)
    model.train(was_training)
    n = max(totals[3].item(), 1.0)
    out = {"loss": totals[0].item() / n, "top1": 100.0 * totals[1].item() / n}
    if with_top5:
        out["top5"] = 100.0 * totals[2].item() / n
    return out


def _phase_key(epoch: int, index: int) -> int:
    # The data order of phase pass `index` before `epoch`: distinct from every training epoch's.
    return 1_000_003 * (index + 1) + epoch


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Distinct, reproducible worker seeds per (seed, epoch, rank); independent of earlier epochs.
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 12_345) % (2**63)


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

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, state: Mapping[str, Any] | None = None) -> RunResult:
        """Train from scratch (``state`` None) or continue from a loaded ``checkpoint.pt`` state."""
        start_time = time.time()
        d = self.distiller
        if state is not None:
            # Load before DDP wrapping; DDP then broadcasts rank 0's (identical) weights.
            d.load_checkpoint_state(state["distiller"])
        self._prepare_modules()
        stats = normalisation_of(self.splits.train)
        d.bind_run(
            RunInfo(
                device=self.device,
                amp_dtype=self.dtype,
                run_dir=self.run_dir if self.ctx.is_main else None,
                mean=tuple(stats[0]) if stats else None,
                std=tuple(stats[1]) if stats else None,
                world_size=self.ctx.world_size,
            )
        )
        optimizer = build_optimizer(d.param_groups(), self.solver)
        scheduler = build_scheduler(optimizer, self.solver, self.iters_per_epoch)
        scaler = grad_scaler(self.device, self.dtype)
        history: list[dict[str, Any]] = []
        phase_history: list[dict[str, Any]] = []
        epoch, best, teacher_top1, wall_before, phase_done = 0, None, None, 0.0, 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, epoch = list(state["history"]), int(state["epoch"])
            phase_history, phase_done = list(state.get("phase_history", [])), int(state.get("phase_done", 0))
            best, teacher_top1 = state.get("best_top1"), state.get("teacher_top1")
            wall_before = state.get("wall_s", 0.0)
            if state.get("world_size", 1) != self.ctx.world_size and self.ctx.is_main:
                say(
                    f"{self.label}: resuming with {self.ctx.world_size} processes (saved with "
                    f"{state.get('world_size')}): the data order differs from an uninterrupted run"
                )
            if self.ctx.is_main:
                say(f"{self.label}: resuming {self.run_dir} after epoch {epoch}/{self.solver['epochs']}")
        elif d.teacher is not None and d.needs_teacher():
            teacher_top1 = evaluate(
                d.teacher, self.test_loader, self.ctx, self.tcfg["channels_last"], self.dtype
            )["top1"]
            if self.ctx.is_main:
                say(f"{self.label}: teacher top-1 on the test split: {teacher_top1:.2f}%")
        if state is not None:
            # Last, after everything that draws random numbers during set-up.
            rng = state["rng"]
            restore_rng(rng[self.ctx.rank] if len(rng) == self.ctx.world_size else rng[0])

        tb_on = self.tcfg["tensorboard"] and self.ctx.is_main
        tb = TensorBoardLog(self.run_dir, tb_on, epoch)
        tb_phase: TensorBoardLog | None = None  # opened on the first phase pass (most methods have none)
        epochs, stop_after = self.solver["epochs"], self.tcfg["stop_after"]
        run_epochs = 0
        try:
            while epoch < epochs and (stop_after is None or run_epochs < stop_after):
                passes = d.phase_passes(epoch, epochs)
                while phase_done < passes:
                    prow = self._phase_pass(epoch, phase_done, passes)
                    phase_done += 1
                    phase_history.append(prow)
                    wall = wall_before + time.time() - start_time
                    rng = self._gather_rng()
                    if self.ctx.is_main:
                        args = (epoch, optimizer, scheduler, scaler, history, best, teacher_top1, wall, rng)
                        self._save(*args, improved=False, phase_done=phase_done, phase_history=phase_history)
                        if tb_phase is None:
                            tb_phase = TensorBoardLog(self.run_dir, tb_on, len(phase_history), "phase")
                        tb_phase.log(prow, len(phase_history), group="phase")
                        say(
                            f"{self.label} phase pass {phase_done}/{passes} before epoch {epoch + 1}  "
                            f"loss {prow['loss']:.4f}  ({prow['time_s']:.1f}s)"
                        )
                t0 = time.time()
                row = self._train_epoch(epoch, optimizer, scheduler, scaler)
                d.on_epoch_end(epoch)
                test = evaluate(
                    d.eval_model(), self.test_loader, self.ctx, self.tcfg["channels_last"], self.dtype
                )
                row.update({f"test_{k}": v for k, v in test.items()})
                row["time_s"] = time.time() - t0
                epoch += 1
                run_epochs += 1
                phase_done = 0
                history.append(row)
                wall = wall_before + time.time() - start_time
                rng = self._gather_rng()
                improved = best is None or test["top1"] > best
                best = test["top1"] if improved else best
                if self.ctx.is_main:
                    args = (epoch, optimizer, scheduler, scaler, history, best, teacher_top1, wall, rng)
                    self._save(*args, improved=improved, phase_history=phase_history)
                    tb.log(row, epoch)
                    top5 = f"  top-5 {test['top5']:.2f}" if "top5" in test else ""
                    say(
                        f"{self.label} epoch {epoch}/{epochs}  loss {row['train_loss']:.4f}  "
                        f"test top-1 {test['top1']:.2f}{top5}  lr {row['lr']:.4g}  ({row['time_s']:.1f}s)"
                    )
        finally:
            tb.close()
            if tb_phase is not None:
                tb_phase.close()
        if epoch >= epochs and self.ctx.is_main:
            self._save_final(epoch, history, teacher_top1)
        self.ctx.barrier()
        return RunResult.from_history(
            self.label,
            self.run_dir,
            self.cfg,
            history,
            epoch,
            epochs,
            best,
            teacher_top1,
            wall_before + time.time() - start_time,
        )

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's RNG states, collected on rank 0 (others get an empty list)."""
        mine = capture_rng()
        if not self.ctx.enabled:
            return [mine]
        import torch.distributed as dist

        out: list[Any] = [None] * self.ctx.world_size if self.ctx.is_main else []
        dist.gather_object(mine, out if self.ctx.is_main else None, dst=0)
        return out

    def _phase_pass(self, epoch: int, index: int, passes: int) -> dict[str, Any]:
        """Pass ``index`` of the distiller's extra phase before ``epoch``: ``phase_step`` per batch;
        returns the log row (means over every process of the step values, plus the distiller's)."""
        d, ctx = self.distiller, self.ctx
        t0 = time.time()
        d.train()
        d.on_phase_pass_start(epoch, index, passes)
        key = _phase_key(epoch, index)
        self.train_loader.sampler.set_epoch(key)
        self.train_loader.generator.manual_seed(_epoch_seed(self.cfg["experiment"]["seed"], key, ctx.rank))
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        bar = tqdm(
            total=self.iters_per_epoch,
            desc=f"{self.label} phase {index + 1}/{passes} before {epoch + 1}",
            disable=not self.show,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        for images, target in self.train_loader:
            images = images.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if self.tcfg["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            values = d.phase_step(images, target, epoch, index)
            n = target.numel()
            seen += n
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * n
            bar.update(1)
        bar.close()
        names = list(sums)
        packed = torch.stack([sums[k] for k in names] + [torch.tensor(float(seen), device=self.device)])
        ctx.all_reduce_sum(packed)
        total = packed[-1].item()
        means = {k: packed[i].item() / total for i, k in enumerate(names)}
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

    def _train_epoch(self, epoch: int, optimizer: Any, scheduler: Any, scaler: Any) -> dict[str, Any]:
        d, ctx = self.distiller, self.ctx
        d.train()
        d.on_epoch_start(epoch, self.solver["epochs"])
        self.train_loader.sampler.set_epoch(epoch)
        self.train_loader.generator.manual_seed(_epoch_seed(self.cfg["experiment"]["seed"], epoch, ctx.rank))
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=self.device)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(
            total=self.iters_per_epoch,
            desc=f"{self.label} {epoch + 1}/{self.solver['epochs']}",
            disable=not self.show,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        for step, (images, target) in enumerate(self.train_loader):
            images = images.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if self.tcfg["channels_last"]:
                images = images.contiguous(memory_format=torch.channels_last)
            progress = (epoch + step / self.iters_per_epoch) / self.solver["epochs"]
            with autocast(self.device, self.dtype):
                logits, losses = self.step(images, target, epoch=epoch, progress=progress)
            loss = sum(v.float() for v in losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = target.numel()
            seen += n
            for name, value in (("loss", loss), *losses.items()):
                sums[name] = sums.get(name, 0.0) + value.detach().float() * n
            correct += (logits.detach().argmax(1) == target).sum()
            if self.show and (step % 20 == 0 or step == self.iters_per_epoch - 1):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
            bar.update(1)
        bar.close()
        names = list(sums)
        packed = torch.stack(
            [sums[k] for k in names] + [correct.float(), torch.tensor(float(seen), device=self.device)]
        )
        ctx.all_reduce_sum(packed)
        total = packed[-1].item()
        means = {k: packed[i].item() / total for i, k in enumerate(names)}
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(
                f"{self.label}: the training loss became {means['loss']} in epoch {epoch + 1}; lower solver.lr "
                "(the checkpoint of the previous epoch is kept)"
            )
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": means.pop("loss")}
        row.update({f"train_{k}": v for k, v in means.items()})
        row["train_top1"] = 100.0 * packed[-2].item() / total
        row.update(d.log_values())
        return row

    # -- files ------------------------------------------------------------------------------------
    def _save(
        self,
        epoch: int,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        history: list[dict[str, Any]],
        best: float | None,
        teacher_top1: float | None,
        wall: float,
        rng: list[dict[str, Any]],
        improved: bool,
        phase_done: int = 0,
        phase_history: list[dict[str, Any]] | None = None,
    ) -> None:
        dstate = self.distiller.checkpoint_state()
        state = {
            "format": ckpt.FORMAT,
            "model": dstate["modules"]["student"],
            "arch": self.cfg["student"]["name"],
            "epoch": epoch,
            "epochs": self.solver["epochs"],
            "config": dict(self.cfg),
            "identity": identity(self.cfg),
            "distiller": dstate,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
            "history": history,
            "best_top1": best,
            "teacher_top1": teacher_top1,
            "wall_s": wall,
            "world_size": self.ctx.world_size,
            # Passes of the distiller's extra phase done before epoch `epoch` (0 after an epoch).
            "phase_done": phase_done,
            "phase_history": phase_history or [],
        }
        ckpt.atomic_save(state, os.path.join(self.run_dir, ckpt.CHECKPOINT))
        if improved:
            ckpt.atomic_save(
                {"model": state["model"], "epoch": epoch, "arch": state["arch"], "top1": best},
                os.path.join(self.run_dir, ckpt.BEST),
            )
        write_csv(history, os.path.join(self.run_dir, "log.csv"))
        if phase_history:
            write_csv(phase_history, os.path.join(self.run_dir, "phase_log.csv"))

    def _save_final(self, epoch: int, history: list[dict[str, Any]], teacher_top1: float | None) -> None:
        student = unwrap(self.distiller.student)
        last = history[-1] if history else {}
        ckpt.atomic_save(
            {
                "model": student.state_dict(),
                "epoch": epoch,
                "arch": self.cfg["student"]["name"],
                "top1": last.get("test_top1"),
            },
            os.path.join(self.run_dir, ckpt.FINAL),
        )
        results = {
            "model": self.cfg["student"]["name"],
            "method": self.cfg["distiller"]["name"],
            "epochs": epoch,
            "test_top1": last.get("test_top1"),
            "test_top5": last.get("test_top5"),
            "best_test_top1": max((r["test_top1"] for r in history), default=None),
            "teacher_top1": teacher_top1,
        }
        ckpt.atomic_text(json.dumps(results, indent=2) + "\n", os.path.join(self.run_dir, "results.json"))


def write_run_config(cfg: Mapping[str, Any], run_dir: str) -> None:
    """The resolved config, saved next to the checkpoint as config.yaml (rank 0 only)."""
    ckpt.atomic_text(dump(cfg), os.path.join(run_dir, "config.yaml"))


__all__ = ["RunResult", "Trainer", "evaluate", "write_run_config"]
