"""Distributed strategies that fit every task, including those with no trainable module parameters, and
whose launched ranks end with the job that launched them."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from typing import Any

import torch
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning import strategies
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)


def unrepeated_evaluation_loader(dataloader: Any) -> Any:
    """`dataloader` with an evaluation sampler that gives every sample to exactly one process.

    Lightning's DistributedSampler pads the last shard with repeated samples so that every process
    runs as many batches; a split of 181 images on 2 processes would be scored as 182.
    """
    sampler = getattr(dataloader, "sampler", None)
    if not isinstance(dataloader, DataLoader) or type(sampler) is not DistributedSampler or sampler.shuffle:
        return dataloader
    unrepeated = UnrepeatedDistributedSampler(
        sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank, shuffle=False
    )
    return _update_dataloader(dataloader, unrepeated)


class RankWatcher(threading.Thread):
    """Watches the launched ranks; when one fails, gives this process `grace` seconds to fail by itself
    at its next collective (gloo notices a closed peer at once), then aborts the process group, which
    is what unblocks a collective that would otherwise wait for the dead rank (NCCL).

    Lightning's own watcher kills this process instead, which would end a whole multirun with it and
    leave nobody to report the failed rank's error.
    """

    def __init__(self, ranks: list[subprocess.Popen], grace: float = 30.0, period: float = 1.0) -> None:
        super().__init__(daemon=True, name="rank-watcher")
        self.ranks = ranks
        self.grace = grace
        self.period = period
        self.job_ended = threading.Event()

    def run(self) -> None:
        while not self.job_ended.wait(self.period):
            failed = [(rank, proc) for rank, proc in enumerate(self.ranks, 1) if proc.poll() not in (None, 0)]
            if failed:
                rank, proc = failed[0]
                log.warning("Rank %d (pid %d) exited with code %d; this process stops at its next "
                            "collective.", rank, proc.pid, proc.returncode)
                if not self.job_ended.wait(self.grace) and torch.distributed.is_initialized():
                    log.warning("Rank %d is gone and this process is still waiting: aborting the process "
                                "group.", rank)
                    torch.distributed.distributed_c10d._abort_process_group()
                return


class RankLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ranks 1.. as `python run.py ...` processes, whose ranks `end_launched_ranks`
    ends with the job, and whose failed rank leaves this process alive to report it (see RankWatcher)."""

    launched: list[subprocess.Popen] = []  # the ranks this process launched, all jobs so far
    watchers: list[RankWatcher] = []

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            RankLauncher.launched += self.procs
            watcher = RankWatcher(self.procs)
            RankLauncher.watchers.append(watcher)
            watcher.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


def end_launched_ranks(failed: bool, timeout: float = 120.0) -> list[int]:
    """End the job's ranks: wait up to `timeout` s for each to finish (kill those still running), or
    after a failure kill them at once (their state is lost with the job); their exit codes.

    Then tear down this process's process group, so that the next job of a multirun starts clean.
    """
    for watcher in RankLauncher.watchers:
        watcher.job_ended.set()
    codes = []
    for proc in RankLauncher.launched:
        if failed and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        try:
            codes.append(proc.wait(timeout))
        except subprocess.TimeoutExpired:
            log.warning("Rank pid %d still runs %.0f s after its job ended: killing it.", proc.pid, timeout)
            proc.kill()
            codes.append(proc.wait())
    RankLauncher.launched, RankLauncher.watchers = [], []
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return codes


class DDPStrategy(strategies.DDPStrategy):
    """Lightning's DDP with exact evaluation, a module with no trainable parameters left unwrapped, and
    ranks launched by `RankLauncher`.

    PyTorch's DistributedDataParallel refuses modules without trainable parameters. Style transfer is
    one: the tensors it optimises are images that each process owns, so there is nothing to average
    across processes, while the process group still shards the data and gathers the logged metrics.

    Validation and test score each sample once (see `unrepeated_evaluation_loader`), so processes may
    run different numbers of batches: validation then calls the module directly, not through the DDP
    wrapper, whose forward would broadcast buffers on every batch and wait for a process that has
    finished. The buffers (BatchNorm statistics) are broadcast once, as the wrapper would.
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = RankLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def configure_ddp(self) -> None:
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()

    def process_dataloader(self, dataloader: object) -> object:
        if self.lightning_module.trainer.overfit_batches:  # training on an unshuffled loader
            return dataloader
        return unrepeated_evaluation_loader(dataloader)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if torch.distributed.is_initialized():
            for buffer in self.lightning_module.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.val_step_context():
            return self.lightning_module.validation_step(*args, **kwargs)
