"""Environments for a rollout, in this process (``LocalEnvs``) or stepped in worker processes (``WorkerEnvs``).

Both hold one ``MultiStepWrapper`` env per episode slot and answer the same calls, so ``rollout`` runs the same
lockstep loop over either: the policy sees the same observations in the same order and draws the same noise, and
the per-seed results are identical (tests/test_rollout.py). Workers step their envs in parallel. An exception in an
env fails that episode only; a worker process that dies takes its episodes with it, and ``rollout`` then runs each
of them again alone in a fresh worker, so only the one that kills its process is reported failed.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable

import numpy as np

WORKER_DIED = "worker process died"  # the start of the error of every episode a dead worker held


def _finish(env) -> dict:
    """What an episode's wrapper knows at its end; the env is closed (free simulators before videos are written)."""
    out = {"max_score": env.max_score, "success": env.success, "n_completed": env.n_completed, "length": env.length,
           "frames": env.frames if env.record else None, "env_name": type(env.env.unwrapped).__name__,
           "fps": env.env.unwrapped.metadata.get("render_fps", 10)}
    env.close()
    return out


class LocalEnvs:
    """Episode slots stepped one after the other in this process."""

    def __init__(self, make_wrapped: Callable, n: int, record: list[bool]):
        self.envs = [make_wrapped(record[i]) for i in range(n)]

    def reset(self, kwargs: list[dict]) -> list:
        return [_call(lambda env=env, kw=kw: env.reset(**kw)[0]) for env, kw in zip(self.envs, kwargs)]

    def step_send(self, actions: dict[int, np.ndarray]) -> None:
        """Step now (one process has nothing to overlap); ``step_receive`` hands the results over."""
        self._stepped = {i: _call(lambda i=i, a=a: self.envs[i].step(a)) for i, a in actions.items()}

    def step_receive(self) -> dict[int, tuple]:
        return self._stepped

    def finish(self) -> list[dict]:
        return [_finish(env) for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _call(fn):
    """(True, value) or (False, "Type: message") for one env call; a simulator can raise anything."""
    try:
        return True, fn()
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"


def _worker(conn, make_wrapped: Callable) -> None:
    """Serve one batch of episode slots after another ("make" opens a batch's envs, "finish" ends and closes them)."""
    envs = {}
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "make":  # {slot: record a video}
                for i, rec in payload.items():
                    envs[i] = make_wrapped(rec)
                conn.send(("ok", None))
            elif cmd == "reset":
                conn.send(("ok", {i: _call(lambda i=i, kw=kw: envs[i].reset(**kw)[0]) for i, kw in payload.items()}))
            elif cmd == "step":
                conn.send(("ok", {i: _call(lambda i=i, a=a: envs[i].step(a)) for i, a in payload.items()}))
            elif cmd == "finish":
                conn.send(("ok", {i: _finish(env) for i, env in envs.items()}))
                envs.clear()
            elif cmd == "close":
                break
    except Exception:  # noqa: BLE001 (making an env failed: the parent fails these slots)
        conn.send(("error", traceback.format_exc(limit=3)))
    finally:
        for env in envs.values():
            env.close()
        conn.close()


def _context():
    """Workers are forked from a fork server: a clean process started once, with the rollout code imported (a spawned
    worker re-imports torch and the rest: ~20 s per worker here). Not forked from the caller: a process that has
    rendered (a serial evaluation, an env made to read its action space) holds OSMesa / EGL state and render threads
    that a forked child inherits half-way, and the child hung at its first frame."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["drifting_policy.evaluation.rollout"])
    return ctx


class WorkerEnvs:
    """``n_workers`` processes (``_context``) that step batch after batch of episode slots (``open``); a worker never
    runs torch. Started once per rollout: a fresh worker costs seconds (imports), an env in a warm one about one.
    ``make_wrapped`` must be picklable (``factory.env_factory``'s is: it carries the env's registry spec)."""

    def __init__(self, make_wrapped: Callable, n_workers: int):
        self.ctx, self.make_wrapped = _context(), make_wrapped
        self.conns: list = [None] * n_workers
        self.procs: list = [None] * n_workers
        self.dead: dict[int, str] = {}
        self.owner: dict[int, int] = {}
        for w in range(n_workers):
            self._start(w)

    def _start(self, w: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.make_wrapped), daemon=True)
        proc.start()
        child.close()
        self.conns[w], self.procs[w] = parent, proc

    def open(self, n: int, record: list[bool]) -> WorkerEnvs:
        """Make the envs of ``n`` episode slots; a worker that died in the last batch is replaced first."""
        for w in list(self.dead):
            self._stop(w)
            self._start(w)
            del self.dead[w]
        n_workers = len(self.procs)
        self.owner = {i: (i // 2) % n_workers for i in range(n)}  # pairs of slots: rollout's even / odd halves
        self._gather(self._send("make", dict(enumerate(record))))  # each spread over all workers
        return self

    def _receive(self, w: int):
        """A worker's answer; a worker that died or failed is marked dead (its slots then fail)."""
        if w in self.dead:
            return None
        try:
            kind, payload = self.conns[w].recv()
        except (EOFError, ConnectionError, OSError):
            self.procs[w].join(timeout=5)
            self.dead[w] = f"{WORKER_DIED}: process {self.procs[w].pid}, exit code {self.procs[w].exitcode}"
            return None
        if kind == "error":
            self.dead[w] = f"worker failed: {payload}"
            return None
        return payload

    def _broadcast(self, cmd: str, per_slot: dict | None) -> dict:
        return self._gather(self._send(cmd, per_slot))

    def _send(self, cmd: str, per_slot: dict | None) -> list[int]:
        asked = []
        for w, conn in enumerate(self.conns):
            if w in self.dead:
                continue
            payload = None if per_slot is None else {i: v for i, v in per_slot.items() if self.owner[i] == w}
            if payload == {}:
                continue
            try:
                conn.send((cmd, payload))
                asked.append(w)
            except (BrokenPipeError, OSError):
                self.dead[w] = f"{WORKER_DIED}: process {self.procs[w].pid}"
        return asked

    def _gather(self, asked: list[int]) -> dict:
        answers = {}
        for w in asked:  # every worker was sent its part first: they step in parallel
            answers |= self._receive(w) or {}
        return answers

    def _failed(self, i: int):
        return False, self.dead.get(self.owner[i], "worker lost")

    def reset(self, kwargs: list[dict]) -> list:
        answers = self._broadcast("reset", dict(enumerate(kwargs)))
        return [answers.get(i) or self._failed(i) for i in range(len(kwargs))]

    def step_send(self, actions: dict[int, np.ndarray]) -> None:
        """Send the actions and return at once: the workers step while the caller computes the next actions."""
        self._in_flight = (list(actions), self._send("step", actions))

    def step_receive(self) -> dict[int, tuple]:
        slots, asked = self._in_flight
        answers = self._gather(asked)
        return {i: answers.get(i) or self._failed(i) for i in slots}

    def finish(self) -> list[dict | None]:
        answers = self._broadcast("finish", None)
        return [answers.get(i) for i in range(len(self.owner))]

    def _stop(self, w: int) -> None:
        if w not in self.dead:
            try:
                self.conns[w].send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        self.conns[w].close()
        self.procs[w].join(timeout=30)
        if self.procs[w].is_alive():
            self.procs[w].kill()

    def close(self) -> None:
        for w in range(len(self.procs)):
            self._stop(w)
