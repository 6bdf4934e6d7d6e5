"""Where cells run: in this process, in a pool of local worker processes, or as Ray tasks.

Executors only decide *where* ``run_cell(spec)`` is called; the driver (``stbench.runner``) plans the
grid, claims cells, writes every record to the store and shows progress. Every executor calls
``on_start(spec)`` before a cell starts (False: skip it, another driver has it) and
``on_done(spec, record)`` when it ends, and produces the same
record for the same spec (the cell seeds itself from its spec alone).

* ``serial``: cell after cell in this process (with ``--cell-timeout``: in one worker process, which
  is the only way to stop a cell that runs too long).
* ``process``: N persistent worker processes (spawned, so CUDA works in them), each with
  ``cores // N`` torch threads and, with ``gpus``, its own GPU (``CUDA_VISIBLE_DEVICES``). A worker
  that dies (segfault, OOM kill) costs only its cell, recorded ``crashed``; a cell past the timeout is
  killed with its worker and recorded ``timeout``; a fresh worker takes the next cell.
* ``ray``: one Ray task per cell, asking for ``num_cpus`` (and one GPU for CUDA cells). Tasks read the
  data directory and write artifacts and expert caches themselves, so on a cluster every node must see
  the same data directory, results folder and cache folder (a shared filesystem, e.g. NFS), and have
  the same stbench installed. The driver writes the records as tasks finish.

The first cell of a group (same dataset, method and seed) runs before the others of its group start,
so a set-up it caches (an expert buffer, a teacher) is built once and reused by the rest.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import wait

from stbench import UserError
from stbench.cell import CellSpec, error_record, run_cell
from stbench.measure import usable_cpus

EXECUTORS = ("serial", "process", "ray")


class GroupOrder:
    """Hands out cells in order, holding back a group's later cells until its first one finished."""

    def __init__(self, specs: list[CellSpec]):
        self.waiting = list(specs)
        self.started: dict[tuple, int] = {}   # group -> cells started
        self.opened: set[tuple] = set()       # groups whose first cell has finished

    def next(self) -> CellSpec | None:
        for i, spec in enumerate(self.waiting):
            if spec.group in self.opened or spec.group not in self.started:
                self.started[spec.group] = self.started.get(spec.group, 0) + 1
                return self.waiting.pop(i)
        return None

    def finished(self, spec: CellSpec) -> None:
        self.opened.add(spec.group)

    def __bool__(self) -> bool:
        return bool(self.waiting)


class SerialExecutor:
    def __init__(self, cell_timeout: float | None = None, progress=None):
        self.cell_timeout, self.progress = cell_timeout, progress

    def run(self, specs, on_start, on_done) -> None:
        if self.cell_timeout:
            ProcessExecutor(workers=1, cell_timeout=self.cell_timeout).run(specs, on_start, on_done)
            return
        for spec in specs:
            if on_start(spec):
                on_done(spec, run_cell(spec, self.progress))


class ProcessExecutor:
    def __init__(self, workers: int = 2, gpus: list[str] | None = None, cell_timeout: float | None = None,
                 cell_fn=run_cell):
        """``cell_fn(spec) -> record`` is what workers call (a module-level function: it is pickled)."""
        if workers < 1:
            raise UserError("--workers must be at least 1")
        self.workers, self.gpus, self.cell_timeout, self.cell_fn = workers, gpus or [], cell_timeout, cell_fn
        self.threads = max(1, usable_cpus() // workers)

    def _spawn(self, index: int):
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[index % len(self.gpus)]} if self.gpus else {}
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(target=_worker_main, args=(child, env, self.threads, self.cell_fn),
                                               daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def _spawn_ready(self, indices) -> list:
        """Start workers and wait until each has imported torch, so a cell's clock starts at the cell."""
        slots = [self._spawn(i) for i in indices]
        for proc, conn in slots:
            try:
                ready = conn.poll(120) and conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                raise RuntimeError(f"a worker process did not start ({_death(proc.exitcode)})")
        return slots

    def run(self, specs, on_start, on_done) -> None:
        order = GroupOrder(specs)
        slots = self._spawn_ready(range(min(self.workers, len(specs))))
        busy: dict[int, tuple[CellSpec, float]] = {}   # slot -> (spec, started)
        try:
            while order or busy:
                for i in range(len(slots)):
                    while i not in busy and order:
                        spec = order.next()
                        if spec is None:
                            break
                        if not on_start(spec):      # claimed by another driver, or finished meanwhile
                            order.finished(spec)
                            continue
                        slots[i][1].send(spec.to_json())
                        busy[i] = (spec, time.monotonic())
                if not busy:
                    continue
                ready = wait([slots[i][1] for i in busy] + [slots[i][0].sentinel for i in busy],
                             timeout=_until_next_timeout(self.cell_timeout, busy))
                for i, (spec, started) in list(busy.items()):
                    proc, conn = slots[i]
                    record = None
                    if conn in ready or conn.poll():
                        try:
                            record = conn.recv()
                        except (EOFError, OSError):
                            record = None
                    if record is None and proc.sentinel in ready and not proc.is_alive():
                        record = error_record(spec, "crashed", _death(proc.exitcode), time.monotonic() - started)
                    elif record is None and self.cell_timeout and time.monotonic() - started > self.cell_timeout:
                        proc.kill()
                        proc.join()
                        record = _timeout_record(spec, self.cell_timeout, started)
                    if record is None:
                        continue
                    del busy[i]
                    if not proc.is_alive():
                        slots[i] = self._spawn_ready([i])[0]
                    order.finished(spec)
                    on_done(spec, record)
        finally:
            for proc, conn in slots:
                try:
                    conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
            for proc, _ in slots:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()

def _worker_main(conn, env: dict, threads: int, cell_fn) -> None:
    """A worker process: set its GPU and threads before torch starts, then run cells until told to stop."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the driver handles Ctrl-C and stops its workers
    from stbench.measure import setup_process
    setup_process(threads)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        conn.send(cell_fn(CellSpec.from_json(message)))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer, or a user)" if name == "SIGKILL" else ""
        return f"the worker process died of {name}{hint}"
    return f"the worker process exited with code {exitcode}"


class RayExecutor:
    def __init__(self, address: str | None = None, cpus_per_cell: int = 1, cell_timeout: float | None = None):
        self.address, self.cpus_per_cell, self.cell_timeout = address, max(1, cpus_per_cell), cell_timeout

    def run(self, specs, on_start, on_done) -> None:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, **({} if self.address else {"num_cpus": usable_cpus()}))
        task = ray.remote(_ray_cell)
        order, pending = GroupOrder(specs), {}   # ref -> (spec, started)
        limit = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_cell)
        try:
            while order or pending:
                while order and len(pending) < limit:
                    spec = order.next()
                    if spec is None:
                        break
                    gpus = 1 if spec.device.startswith("cuda") else 0
                    if not on_start(spec):
                        order.finished(spec)
                        continue
                    ref = task.options(num_cpus=self.cpus_per_cell, num_gpus=gpus).remote(
                        spec.to_json(), self.cpus_per_cell)
                    pending[ref] = (spec, time.monotonic())
                done, _ = ray.wait(list(pending), num_returns=1, timeout=_until_next_timeout(self.cell_timeout, pending))
                for ref in done:
                    spec, started = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - the task's worker died
                        record = error_record(spec, "crashed", f"the Ray task failed: {type(err).__name__}",
                                              time.monotonic() - started)
                    order.finished(spec)
                    on_done(spec, record)
                for ref, (spec, started) in list(pending.items()):
                    if self.cell_timeout and time.monotonic() - started > self.cell_timeout:
                        ray.cancel(ref, force=True)
                        del pending[ref]
                        order.finished(spec)
                        on_done(spec, _timeout_record(spec, self.cell_timeout, started))
        finally:
            if started_here:
                ray.shutdown()

def _until_next_timeout(cell_timeout: float | None, running: dict) -> float | None:
    """Seconds to wait before the oldest running cell (values: (spec, started)) reaches its timeout."""
    if not cell_timeout or not running:
        return None
    oldest = min(started for _, started in running.values())
    return max(0.05, cell_timeout - (time.monotonic() - oldest))


def _timeout_record(spec: CellSpec, cell_timeout: float, started: float) -> dict:
    return error_record(spec, "timeout", f"stopped after --cell-timeout {cell_timeout:g} s",
                        time.monotonic() - started)


def _ray_cell(spec_json: str, threads: int) -> dict:
    from stbench.measure import setup_process
    setup_process(threads)
    return run_cell(CellSpec.from_json(spec_json))


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    return ray


def make_executor(name: str, workers: int | None = None, gpus: list[str] | None = None,
                  ray_address: str | None = None, cell_timeout: float | None = None, progress=None):
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if cell_timeout is not None and cell_timeout <= 0:
        raise UserError("--cell-timeout must be a positive number of seconds")
    if name == "process":
        return ProcessExecutor(workers or max(1, len(gpus or []) or 2), gpus, cell_timeout)
    if name == "ray":
        if gpus:
            raise UserError("--gpus applies to --executor process; Ray assigns GPUs itself")
        import_ray()
        cpus = max(1, usable_cpus() // workers) if workers else 1
        return RayExecutor(ray_address, cpus, cell_timeout)
    if workers or gpus:
        raise UserError("--workers/--gpus need --executor process (or ray)")
    return SerialExecutor(cell_timeout, progress)
