"""Data-parallel LoRA training over ``torch.distributed``, launched by ``torchrun``.

Only rank 0 runs the :class:`~learner.worker.loop.Learner`: it holds the lease, reads the
replay store, asks the teacher, evaluates, saves versions and checkpoints. Every other rank
only *follows* (:func:`follow`): it holds the same base model and LoRA adapter and does its
share of each training step. Rank 0's trainer is a :class:`DistributedTrainer`, so the loop
calls ``step``/``load_version`` exactly as on one process.

One step of a batch of ``B`` examples on ``W`` ranks::

    rank 0: Trainer.step(examples, weights) --command (the batch)--> every rank
    rank r: its slice examples[r::W] -> per-example losses l_i -> sum_i w_i l_i / B
            -> backward -> one flat buffer [LoRA grads | B loss slots | tokens]
    all ranks: all_reduce(SUM) of the buffer -> grads = the full batch's gradient,
            the B losses in batch order, the batch's tokens
    all ranks: warm-up lr, clip to norm 1, AdamW step: identical inputs, identical adapter

Dividing by the global ``B`` (not the slice's size) is what makes the summed gradient
exactly the single-process gradient of ``mean_i(w_i l_i)``; uneven slices (``B`` not a
multiple of ``W``, even empty ones) need no special weighting.

Commands go through the rendezvous key-value store, not a collective: a follower may wait
for hours (rank 0 waiting for the lease, paused, nothing to learn), and a collective that
waits that long hits the process group's timeout (and with NCCL keeps a GPU spinning).
Collectives run only once every rank has a command in hand.

State that rank 0 changes outside a step (a checkpoint restored in ``Learner.setup``, a
rollback or reset through ``load_version``) reaches the followers by a *sync*: rank 0's
adapter weights, optimizer state and warm-up position overwrite theirs. Rank 0 syncs before
its first step and after every ``load_version``, and every ``check_every`` steps all ranks
compare a fingerprint of their adapters and resync if they differ.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from learner.config import LearnerConfig
from learner.training.step import Pairs, Trainer

log = logging.getLogger(__name__)

# Generous: collectives only start once every rank has a command, but a follower may still
# be loading (or, on another host, bootstrapping) the base model when rank 0's first sync
# arrives.
DEFAULT_TIMEOUT = timedelta(minutes=30)
STEP, SYNC, STOP = "step", "sync", "stop"


def launched_by_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    """True when this process is one of several started by ``torchrun`` (WORLD_SIZE > 1)."""
    return int(env.get("WORLD_SIZE", "1")) > 1


class CommandChannel:
    """Rank 0's commands to the followers, numbered, as JSON values in the rendezvous store.

    The store is polled with a non-blocking ``check`` (about 12 µs) and a growing pause:
    a blocking ``wait`` with a timeout would log a c10d warning at every timeout while idle.
    """

    MIN_PAUSE = 0.0002  # seconds: back-to-back steps are picked up within a fraction of a ms
    MAX_PAUSE = 0.05  # an idle follower checks 20 times a second

    def __init__(self, store: dist.Store) -> None:
        self.store = store
        self.seq = 0

    def post(self, command: dict[str, Any]) -> None:
        """Publish the next command (rank 0)."""
        self.seq += 1
        self.store.set(f"cmd/{self.seq}", json.dumps(command))
        if self.seq > 1:
            # Every command but ``stop`` ends in a collective, which rank 0 left only after
            # every follower had joined it, so each follower has read the previous one.
            self.store.delete_key(f"cmd/{self.seq - 1}")

    def receive(self) -> dict[str, Any]:
        """Wait for the next command (followers)."""
        self.seq += 1
        key = f"cmd/{self.seq}"
        pause = self.MIN_PAUSE
        while not self.store.check([key]):
            time.sleep(pause)
            pause = min(pause * 2, self.MAX_PAUSE)
        command: dict[str, Any] = json.loads(self.store.get(key))
        return command


@dataclass
class DistContext:
    """This process's place in the group and the command channel from rank 0."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    channel: CommandChannel

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """A bare ``cuda`` becomes this process's own GPU (one GPU per local rank)."""
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def trainer_factory(self) -> Callable[[LearnerConfig, Path, torch.device], Trainer]:
        """What rank 0's ``Learner`` builds its trainer with."""

        def build(config: LearnerConfig, model_dir: Path, device: torch.device) -> Trainer:
            return DistributedTrainer(config, model_dir, self.device_for(device), self)

        return build

    def stop_followers(self) -> None:
        """Rank 0, on its way out: end the followers' loops, then wait until they have
        read the command (when rank 0 hosts the store, its exit would close it)."""
        self.channel.post({"op": STOP})
        dist.barrier()


def init_from_env(device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT) -> DistContext:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT): NCCL for CUDA, gloo on CPU.

    The rendezvous is done here rather than inside ``init_process_group`` so that the
    store it yields can also carry the commands (:class:`CommandChannel`).
    """
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        # Object collectives (the optimizer state of a sync) stage through the current GPU.
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    # An elastic restart gets a new store from torchrun; the attempt in the prefix also keeps
    # a re-used one from replaying an earlier attempt's commands.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    channel = CommandChannel(dist.PrefixStore(f"lifelong/attempt-{attempt}/", store))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    log.info("rank %d of %d joined the %s process group", rank, world_size, backend)
    return DistContext(rank, world_size, local_rank, local_world, channel)


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose step is shared by every rank of the process group.

    On rank 0 ``step`` and ``load_version`` behave as in the base class (same arguments,
    same results), and the followers (:func:`follow`) mirror them. Losses and tokens are
    those of the whole batch, in the batch's order, on every rank.
    """

    def __init__(
        self,
        config: LearnerConfig,
        model_dir: Path,
        device: torch.device,
        context: DistContext,
        check_every: int = 100,
    ) -> None:
        self.dist = context
        self.check_every = check_every  # steps between adapter comparisons (0: never)
        self._synced = False  # the followers have rank 0's state (set by the first sync)
        self._base_checked = False
        super().__init__(config, model_dir, device)
        if device.type == "cpu" and not config.num_threads:
            # The ranks on one host share its cores: all but one each would oversubscribe.
            cores = max(1, len(os.sched_getaffinity(0)) - 1)
            torch.set_num_threads(max(1, cores // context.local_world_size))
        if not context.is_leader:
            # Own dropout masks per rank (rank 0 keeps the single-process stream).
            torch.manual_seed(config.seed + context.rank)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._steps = 0

    # --- rank 0's side -----------------------------------------------------------------

    def step(
        self, examples: Pairs, weights: np.ndarray, distill: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """One AdamW step on the whole batch, shared by every rank (rank 0 calls it).

        Not yet here: the distillation term (``distill`` is ignored; see the README)."""
        self._require_leader("step")
        if not self._synced:
            self.sync()  # a checkpoint may have been restored into rank 0's weights
        self._steps += 1
        check = bool(self.check_every) and self._steps % self.check_every == 0
        command = {
            "op": STEP,
            "examples": [list(e) for e in examples],
            # JSON floats round-trip exactly; the dtype keeps every rank's loss arithmetic
            # that of a single process.
            "weights": np.asarray(weights).tolist(),
            "dtype": str(np.asarray(weights).dtype),
            "check": check,
        }
        self.dist.channel.post(command)
        return self.run_step(command)

    def load_version(self, path: Path | None) -> None:
        """Load the version on rank 0 and send its weights (and fresh optimizer) to all."""
        self._require_leader("load_version")
        super().load_version(path)
        self.sync()

    def load_weights(self, path: Path) -> None:
        """Load a version's weights on rank 0 (optimizer kept) and send them to all."""
        self._require_leader("load_weights")
        super().load_weights(path)
        self.sync()

    def sync(self) -> None:
        """Make every follower an exact copy of rank 0's adapter and optimizer."""
        self._require_leader("sync")
        # Rank 0 decides whether the base is compared too: a follower outlives a trainer
        # that rank 0 rebuilds, so their own flags could disagree about the collective.
        check_base = not self._base_checked
        self.dist.channel.post({"op": SYNC, "check_base": check_base})
        self.run_sync(check_base)

    def _require_leader(self, what: str) -> None:
        if not self.dist.is_leader:
            raise RuntimeError(f"{what} is rank 0's to call; rank {self.dist.rank} follows")

    # --- what every rank runs ------------------------------------------------------------

    def run_step(self, command: dict[str, Any]) -> tuple[np.ndarray, int]:
        """This rank's share of a step command; returns the whole batch's losses, tokens."""
        started = time.perf_counter()
        examples = [(str(p), str(t)) for p, t in command["examples"]]
        weights = np.asarray(command["weights"], dtype=command["dtype"])
        rank, world = self.dist.rank, self.dist.world_size
        self.optimizer.zero_grad(set_to_none=True)
        mine, tokens = self._backward_slice(
            examples[rank::world], weights[rank::world], len(examples)
        )
        losses, tokens = self._all_reduce_gradients(mine, tokens, len(examples))
        self._apply_update()  # Trainer's: same gradients in, same adapter out
        if command["check"]:
            self._check_in_sync()
        elapsed = max(time.perf_counter() - started, 1e-9)
        self.tokens_per_second = 0.9 * self.tokens_per_second + 0.1 * tokens / elapsed
        return losses, tokens

    def _backward_slice(
        self, examples: list[tuple[str, str]], weights: np.ndarray, total: int
    ) -> tuple[torch.Tensor, int]:
        """Backward of ``sum(w_i * loss_i) / total`` over this rank's slice; returns the
        slice's losses ``[b]`` and tokens. An empty slice (``total < world``) adds nothing."""
        if not examples:
            return torch.zeros(0, device=self.device), 0
        encoded, tokens = self.encode(examples)
        losses = self.losses(encoded)  # (b,)
        w = torch.as_tensor(weights, device=self.device)  # (b,)
        # Summed over the ranks this is mean(w * losses) over the whole batch, the loss of
        # Trainer.step (importance weights undo the prioritized draw's bias).
        ((w * losses).sum() / total).backward()
        return losses.detach(), tokens

    def _all_reduce_gradients(
        self, losses: torch.Tensor, tokens: int, total: int
    ) -> tuple[np.ndarray, int]:
        """Sum the LoRA gradients, losses and token counts of all ranks in one all_reduce.

        The buffer is ``[grad of each trainable parameter, flattened | total loss slots |
        tokens]``: each rank writes its losses into its own slots (``rank::world``, where
        its examples sit in the batch) and zeros elsewhere, so the sum puts every loss in
        batch order without a second collective. Parameters without a gradient (an empty
        slice) contribute zeros, and every rank gets every gradient back, so AdamW updates
        the same parameters everywhere. Token counts stay exact in float32 below 2**24.
        """
        rank, world = self.dist.rank, self.dist.world_size
        slots = torch.zeros(total, dtype=torch.float32, device=self.device)
        slots[rank::world] = losses.to(torch.float32)
        grads = [
            torch.zeros(p.numel(), dtype=torch.float32, device=self.device)
            if p.grad is None
            else p.grad.reshape(-1).to(torch.float32)
            for p in self._trainable
        ]
        count = torch.tensor([float(tokens)], device=self.device)
        flat = torch.cat([*grads, slots, count])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in self._trainable:
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        return flat[offset : offset + total].cpu().numpy(), int(flat[-1].item())

    def run_sync(self, check_base: bool = False) -> None:
        """Rank 0's adapter weights, optimizer state and warm-up position, to every rank.

        The weights go as one flat tensor broadcast; the optimizer state (AdamW moments,
        step counts) as one pickled object, moved to the CPU first. Syncs are rare: at the
        first step, after a rollback or reset, after a failed check.
        """
        leader = self.dist.is_leader
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in self._trainable])
            dist.broadcast(flat, src=0)
            if not leader:
                self._load_flat(flat)
        payload: list[Any] = [None, None]
        if leader:
            payload = [_to_cpu(self.optimizer.state_dict()), self.fresh_steps]
        dist.broadcast_object_list(payload, src=0)
        if not leader:
            self.optimizer.load_state_dict(payload[0])
            self.fresh_steps = int(payload[1])
        if check_base:
            self._check_base()
        self._synced = True

    def _load_flat(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._trainable:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def _check_base(self) -> None:
        """The frozen base must be the same everywhere: syncing the adapter cannot fix a
        follower that loaded another model (on another host, say)."""
        frozen = [p for p in self.model.parameters() if not p.requires_grad]
        if not _same_on_all_ranks(_fingerprint(frozen), self.device):
            raise RuntimeError("the ranks loaded different base models (weights differ)")
        self._base_checked = True

    def _check_in_sync(self) -> None:
        """Compare the adapters; if they differ (rank 0 changed its weights without a
        sync), rank 0's replace the others'. Every rank takes the same branch."""
        if not _same_on_all_ranks(_fingerprint(self._trainable), self.device):
            log.warning("rank %d: adapters differ across ranks; resyncing", self.dist.rank)
            self.run_sync()


def follow(trainer: DistributedTrainer) -> None:
    """A follower's loop (ranks > 0): run rank 0's commands until it says stop."""
    channel = trainer.dist.channel
    while True:
        command = channel.receive()
        if command["op"] == STEP:
            trainer.run_step(command)
        elif command["op"] == SYNC:
            trainer.run_sync(bool(command["check_base"]))
        elif command["op"] == STOP:
            dist.barrier()  # rank 0 waits for this before it exits
            return
        else:
            raise RuntimeError(f"unknown command from rank 0: {command['op']!r}")


def ignore_stop_signals() -> None:
    """For followers: a Ctrl-C or ``torchrun``'s SIGTERM reaches every rank, but rank 0
    first finishes its step and checkpoint, which still need the followers; they leave
    when rank 0 says stop (or when ``torchrun`` kills them)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: log.info("follower: signal %d, waiting", signum))


# --- fingerprints --------------------------------------------------------------------------

CHUNK = 1 << 24  # 16-bit words per chunk: bounds the int64 temporary at 128 MiB


def _fingerprint(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """An exact, order-independent fingerprint of the parameters' bits: the int64 sums of
    their 16-bit words, plain and weighted by the parameter's index. Float sums would
    depend on the reduction order (thread counts differ between hosts); integer sums don't.
    (Weights are float32 or 16-bit floats here, so every tensor splits into 16-bit words.)
    """
    plain = torch.zeros((), dtype=torch.int64)
    weighted = torch.zeros((), dtype=torch.int64)
    for i, p in enumerate(params):
        words = p.detach().contiguous().reshape(-1).view(torch.int16)
        total = sum(
            (chunk.to(torch.int64).sum().cpu() for chunk in words.split(CHUNK)),
            torch.zeros((), dtype=torch.int64),
        )
        plain += total
        weighted += total * (i + 1)
    return torch.stack([plain, weighted, torch.tensor(len(params))])


def _same_on_all_ranks(values: torch.Tensor, device: torch.device) -> bool:
    """True when every rank holds the same ``values`` (MAX of v and of -v: max == min)."""
    both = torch.cat([values, -values]).to(device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    n = len(values)
    return bool(torch.equal(both[:n], -both[n:]))


def _to_cpu(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU, for pickling."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
