"""Soak: mission days pulled and processed while processes are killed at random.

A coordinator and two nodes (``dpct coordinator start``, ``dpct node start``, real
processes) process simulated mission days (``dpct sim run``) with the shipped ingest and
BAM workflows (``--pipelines`` adds AIM). Each day's delivery is pulled by two
``dpct transfer pull`` processes racing each other. A chaos loop, at random intervals,
SIGKILLs a node (then restarts it), a worker process of a node, the coordinator (then
restarts it), a pull in progress (then pulls again), and restarts the PostgreSQL server.

PostgreSQL is the soak's own cluster (``initdb`` into a temporary folder, a free port
on 127.0.0.1, run as the ``postgres`` user when the soak runs as root); the server on
5432 is never touched. ``--sqlite`` soaks the embedded database instead (no restarts).

When the time is up, chaos stops and everything settles. A job that ran out of
attempts only because chaos killed each of them (``LeaseExpired``, ``WorkerCrashed``)
is resumed once, as an operator would (``dpct workflow resume``); any other failure
stays and counts as a workflow not in a right final state. Then everything is stopped
and checked from the database and the store:

- workflows not SUCCESS (``not_final``),
- duplicated: a job that succeeded twice (two ``job.success`` events or two solutions),
  or a delivered file registered twice (same checksum),
- lost: a delivered file not registered,
- corrupted: a registered file whose bytes differ from its size and SHA-256,
- missing: a registered file that is not in the store,
- orphaned: a file in the product store without a registry row.

Usage::

    python bench/soak.py --minutes 30          # the opt-in soak (PostgreSQL)
    python bench/soak.py --ci                  # 5 minutes, what CI runs
    python bench/soak.py --quick --sqlite      # 2 minutes on SQLite
    python bench/soak.py --json                # last line: one JSON object

Every process it starts is in its own session and is killed on exit, Ctrl-C included
(exit status 130); should the soak itself be SIGKILLed, a watchdog process kills those
sessions, stops the PostgreSQL cluster and removes the work folders. Exit status 1 when
a check fails. Network traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, parser, report

from dpct.config import Settings
from dpct.mission.delivery import read_manifest
from dpct.storage import Database
from dpct.storage._schema import datasets, events, jobs, solutions, transfers, workflows
from dpct.testing.postgres import PostgresCluster, PostgresUnavailable, free_port

HERE = Path(__file__).parent
FIRST_DAY = 700  # a Monday of OBMT weeks (700 = 7 × 100): a week of days completes one
SCALE = 0.001  # 1.5·10⁴ AF windows a day: ~4 s to simulate, seconds to process
PIPELINES = ("ingest", "bam")
CHAOS_ERRORS = {"LeaseExpired", "WorkerCrashed"}
"""Failures a kill causes by itself: a job whose every attempt ended so was chaos's."""
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
NODES = ("pfs.pr1", "pfs.pr2")
PROCESS_ENV = {
    "DPCT_LEASE_S": "8",
    "DPCT_HEARTBEAT_S": "1",
    "DPCT_NODE_DOWN_AFTER_S": "6",
    "DPCT_COORDINATOR_TICK_S": "0.5",
    "DPCT_RETRY_BACKOFF_S": "0.5",
}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------- processes ------


class Processes:
    """Every child the soak starts, each in its own session, so that one call kills all."""

    def __init__(self, pid_file: Path) -> None:
        self.lock = threading.Lock()
        self.children: list[subprocess.Popen[bytes]] = []
        self.sessions: set[int] = set()
        self.closed = False
        self.pid_file = pid_file

    def start(
        self, args: list[str], log_file: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, log_file.open("ab") as out:
            if self.closed:  # a thread still running after the end starts nothing
                raise RuntimeError("the soak is closing")
            out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(args[2:])}\n".encode())
            out.flush()
            child = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            self.children = [c for c in self.children if c.poll() is None]
            self.children.append(child)
            self.sessions.add(child.pid)
            with self.pid_file.open("a") as pids:
                pids.write(f"{child.pid}\n")
        return child

    def kill_all(self, *, close: bool = False) -> None:
        """SIGKILL each child's whole session: a node and its workers, and the orphaned
        workers of a node killed earlier, whose session outlives its leader."""
        with self.lock:
            self.closed = self.closed or close
            children = list(self.children)
            sessions = set(self.sessions)
        for group in live_sessions() & sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)


def _proc_stat(pid: str) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, …"""
    return Path("/proc", pid, "stat").read_text().rsplit(")", 1)[1].split()


def live_sessions() -> set[int]:
    """Session ids that have a live process (a session's id is its leader's pid)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                found.add(int(_proc_stat(entry.name)[3]))
    return found


def worker_pids(parent: int) -> list[int]:
    """The worker processes of a node: children running ``multiprocessing.spawn``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if int(_proc_stat(entry.name)[1]) != parent:
                continue
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"multiprocessing.spawn" in cmdline:
            found.append(int(entry.name))
    return found


def start_watchdog(parent: int, pid_file: Path, last_words: str) -> None:
    """A process that outlives a SIGKILLed soak: kills the sessions listed in
    ``pid_file`` (every child the soak started), then runs ``last_words``. A soak that
    ends normally removes ``pid_file`` first, so a reused pid is never hit."""
    script = (
        f"while kill -0 {parent} 2>/dev/null; do sleep 2; done; "
        f'if [ -f "{pid_file}" ]; then for p in $(cat "{pid_file}"); do '
        f"kill -9 -- -$p 2>/dev/null; done; {last_words}; fi"
    )
    subprocess.Popen(
        ["bash", "-c", script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- the soak -------


class Soak:
    def __init__(self, args: Any, work: Path) -> None:
        self.args = args
        self.work = work
        self.home = work / "home"
        self.upstream = work / "upstream"
        self.logs = work / "logs"
        self.rng = random.Random(args.seed)
        self.procs = Processes(work / "pids")
        self.postgres: PostgresCluster | None = None
        self.env: dict[str, str] = {}
        self.db: Database | None = None
        self.services: dict[str, subprocess.Popen[bytes] | None] = {}
        self.services_lock = threading.Lock()
        self.killed: Counter[str] = Counter()
        self.crashed: Counter[str] = Counter()
        self.pulls: Counter[str] = Counter()
        self.deliveries: list[Path] = []
        self.kill_next_pull = threading.Event()
        self.stop_chaos = threading.Event()
        self.stop_days = threading.Event()
        self.resumed = 0
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.http = ""

    # ------------------------------------------------------------ set-up ---------

    def dpct(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dpct", *args]

    def setup(self) -> None:
        env = {**os.environ, **PROCESS_ENV, "DPCT_HOME": str(self.home)}
        env.pop("DPCT_DATABASE_URL", None)
        last_words = "" if self.args.keep else f"rm -rf {self.work}"
        if not self.args.sqlite:
            try:
                self.postgres = PostgresCluster(prefix="dpct-soak-pg-")
            except PostgresUnavailable as err:
                raise SystemExit(f"{err}; use --sqlite") from err
            last_words = (
                f"{self.postgres.stop_command()}; rm -rf {self.postgres.folder}; {last_words}"
            )
        start_watchdog(os.getpid(), self.procs.pid_file, last_words.strip("; ") or ":")
        if self.postgres is not None:
            self.postgres.init()
            env["DPCT_DATABASE_URL"] = self.postgres.url
            log(f"PostgreSQL {self.postgres.bin.parent.name} on 127.0.0.1:{self.postgres.port}")
        else:
            log("SQLite")
        self.env = env
        self.cli("db", "upgrade")
        self.cli("workflow", "install", *self.args.pipelines.split(","))
        self.upstream.mkdir(parents=True)
        self.serve_upstream()
        settings = Settings(home=self.home, database_url=env.get("DPCT_DATABASE_URL", ""))
        self.db = Database(settings.url, create=False)

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> int:
        child = self.procs.start(self.dpct(*args), self.logs / "cli.log", self.env)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            code = child.wait()
        if check and code != 0:
            raise SystemExit(f"`dpct {' '.join(args)}` exited {code}; see {self.logs}/cli.log")
        return code

    # ------------------------------------------------------------ services -------

    def start_service(self, name: str) -> None:
        args = (
            self.dpct("coordinator", "start")
            if name == "pfs.coordinator"
            else self.dpct("node", "start", "--name", name, "--slots", "2")
        )
        with self.services_lock:
            self.services[name] = self.procs.start(args, self.logs / f"{name}.log", self.env)

    def supervise(self) -> None:
        """Restart a service that exited without chaos killing it (as systemd would)."""
        with self.services_lock:
            dead = [n for n, p in self.services.items() if p is not None and p.poll() is not None]
        for name in dead:
            code = self.services[name].returncode  # type: ignore[union-attr]
            self.crashed["coordinator" if name == "pfs.coordinator" else "node"] += 1
            log(f"{name} exited on its own ({code}); restarting it")
            self.start_service(name)

    def kill_service(self, name: str) -> None:
        with self.services_lock:
            process = self.services.get(name)
            self.services[name] = None  # not supervised until restarted below
        kind = "coordinator" if name == "pfs.coordinator" else "node"
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)  # the process only: its workers are orphaned
            process.wait()
            self.killed[kind] += 1
            log(f"chaos: SIGKILL {name}")
            time.sleep(self.rng.uniform(0.0, 3.0))
        elif process is not None:
            self.crashed[kind] += 1  # it exited on its own before the supervisor saw it
        self.start_service(name)

    # ------------------------------------------------------------ days -----------

    def backlog(self) -> int:
        """Workflows not yet ended; -1 when the database does not answer (a restart)."""
        assert self.db is not None
        try:
            with self.db.read() as conn:
                query = sa.select(sa.func.count()).where(workflows.c.status.in_(["NEW", "RUNNING"]))
                return int(conn.execute(query).scalar_one())
        except Exception:
            return -1

    def days(self) -> None:
        """Simulate a day (while the previous ones are processed), wait until the backlog
        is small, then pull it."""
        day = FIRST_DAY
        while not self.stop_days.is_set():
            if not self.simulate(day):
                time.sleep(5.0)
                continue
            while not self.stop_days.is_set() and not 0 <= self.backlog() <= self.args.backlog:
                time.sleep(1.0)
            if self.stop_days.is_set():
                return  # simulated after the end: not pulled, not counted
            folder = self.upstream / f"sim-s0-d{day}"
            self.deliveries.append(folder)
            # Every other day over HTTP: both peers race.
            source = f"{self.http}/{folder.name}" if day % 2 else str(folder)
            self.pull_racing(source, folder.name)
            day += 1

    def simulate(self, day: int) -> bool:
        code = self.cli(
            "sim", "run", "--day", str(day), "--out", str(self.upstream), "--scale",
            str(self.args.scale), "--workers", "1", "--no-truth", "--json", check=False,
        )  # fmt: skip
        if code != 0:
            self.errors.append(f"`dpct sim run --day {day}` exited {code}")
            return False
        log(f"day {day} simulated")
        return True

    def pull(self, source: str, name: str, tag: str) -> subprocess.Popen[bytes]:
        self.pulls["started"] += 1
        args = self.dpct("transfer", "pull", source, "--json")
        return self.procs.start(args, self.logs / f"pull-{name}-{tag}.log", self.env)

    def pull_racing(self, source: str, name: str) -> None:
        """Two pulls at once; one of them killed mid-transfer when chaos asks; then pull
        again until one pull ends well."""
        racers = [self.pull(source, name, "a"), self.pull(source, name, "b")]
        killed = False
        if self.kill_next_pull.is_set():
            self.kill_next_pull.clear()
            killed = self.kill_pull(self.rng.choice(racers))
        codes = [p.wait() for p in racers]
        # Not killed, yet failed: a race lost, or the database restarting (exit 5).
        self.pulls["failed"] += sum(1 for c in codes if c > 0)
        if killed or any(c != 0 for c in codes):
            self.pulls["repeated"] += 1
            for attempt in range(8):
                code = self.pull(source, name, f"re{attempt}").wait()
                if code == 0:
                    break
                time.sleep(2.0)
            else:
                self.errors.append(f"no pull of {name} ended well")
        log(f"{source} pulled (exit codes {codes}{', one killed' if killed else ''})")

    def kill_pull(self, victim: subprocess.Popen[bytes]) -> bool:
        """SIGKILL a pull at a random moment after it staged its first file (downloading,
        verifying, moving into the store or registering), or at a random moment."""
        staging = self.home / "transfer"
        deadline = time.monotonic() + self.rng.uniform(1.0, 6.0)
        while victim.poll() is None and time.monotonic() < deadline:
            if any(p.is_file() for p in staging.rglob("*")) if staging.exists() else False:
                time.sleep(self.rng.uniform(0.0, 0.3))
                break
            time.sleep(0.005)
        if victim.poll() is not None:
            return False
        victim.send_signal(signal.SIGKILL)
        self.killed["pull"] += 1
        log("chaos: SIGKILL a pull")
        return True

    def serve_upstream(self) -> None:
        """The upstream folder over HTTP (Range, sendfile) on 127.0.0.1, its own process."""
        port = free_port()
        args = [sys.executable, str(HERE / "_http_server.py"), str(self.upstream), str(port)]
        self.procs.start(args, self.logs / "http.log", self.env)
        self.http = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                return
            time.sleep(0.2)
        raise RuntimeError("the upstream HTTP server did not start")

    # ------------------------------------------------------------ chaos ----------

    def chaos(self) -> None:
        kinds = ["node", "worker", "coordinator", "pull"]
        if self.postgres is not None:
            kinds.append("postgres")
        while not self.stop_chaos.wait(self.rng.expovariate(1.0 / self.args.chaos_every)):
            kind = self.rng.choice(kinds)
            try:
                self.strike(kind)
            except Exception as err:
                log(f"chaos: {kind} failed: {err}")

    def strike(self, kind: str) -> None:
        if kind == "node":
            self.kill_service(self.rng.choice(NODES))
        elif kind == "coordinator":
            self.kill_service("pfs.coordinator")
        elif kind == "worker":
            with self.services_lock:
                nodes = [p for n, p in self.services.items() if n in NODES and p is not None]
            pids = [w for p in nodes for w in worker_pids(p.pid)]
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    self.killed["worker"] += 1
                    log("chaos: SIGKILL a worker")
        elif kind == "pull":
            self.kill_next_pull.set()
        elif kind == "postgres" and self.postgres is not None:
            mode = self.rng.choice(["fast", "immediate"])
            log(f"chaos: restart PostgreSQL ({mode})")
            self.postgres.restart(mode, self.rng.uniform(0.5, 5.0))
            self.killed["postgres"] += 1

    # ------------------------------------------------------------ settling -------

    def workflow_rows(self) -> list[Any]:
        assert self.db is not None
        with self.db.read() as conn:
            return list(conn.execute(sa.select(workflows.c.id, workflows.c.status)))

    def settle(self, deadline: float) -> bool:
        """Wait until every workflow has ended and none appeared for a while."""
        quiet_since, last = time.monotonic(), None
        while time.monotonic() < deadline:
            self.supervise()
            try:
                rows = self.workflow_rows()
            except Exception:
                time.sleep(1.0)
                continue
            state = sorted(rows)
            if state != last:
                quiet_since, last = time.monotonic(), state
            if all(s in ENDED for _, s in rows) and time.monotonic() - quiet_since > 10:
                return True
            time.sleep(1.0)
        return False

    def chaos_only_failures(self) -> list[int]:
        """Workflows whose failed jobs all failed for chaos's reasons alone."""
        assert self.db is not None
        with self.db.read() as conn:
            query = (
                sa.select(jobs.c.workflow_id, jobs.c.error_class)
                .join(workflows, workflows.c.id == jobs.c.workflow_id)
                .where(
                    workflows.c.status.in_(["FAILED", "PARTIALLYSUCCESS"]),
                    jobs.c.status == "FAILED",
                )
            )
            classes: dict[int, set[str]] = {}
            for wf, error_class in conn.execute(query):
                classes.setdefault(int(wf), set()).add(error_class or "")
        return sorted(wf for wf, c in classes.items() if c <= CHAOS_ERRORS)

    # ------------------------------------------------------------ run ------------

    def run(self) -> None:
        self.setup()
        for name in ("pfs.coordinator", *NODES):
            self.start_service(name)
        days = threading.Thread(target=self.days, name="days", daemon=True)
        chaos = threading.Thread(target=self.chaos, name="chaos", daemon=True)
        self.threads = [days, chaos]
        days.start()
        chaos.start()
        end = time.monotonic() + self.args.minutes * 60
        while time.monotonic() < end and days.is_alive():
            self.supervise()
            time.sleep(0.5)
        log("time is up: chaos stops, days stop")
        self.stop_chaos.set()
        self.stop_days.set()
        deadline = time.monotonic() + self.args.settle_s  # for all of the settling
        chaos.join(60)
        while days.is_alive() and time.monotonic() < deadline:
            self.supervise()
            days.join(0.5)
        if days.is_alive():
            self.errors.append("the last delivery was still being pulled at the settling limit")
        if not self.settle(deadline):
            self.errors.append(f"workflows still running after {self.args.settle_s} s of settling")
        for wf in self.chaos_only_failures():
            log(f"workflow {wf} ran out of attempts to chaos alone: resuming it")
            if self.cli("workflow", "resume", str(wf), check=False) == 0:
                self.resumed += 1
        if self.resumed and not self.settle(deadline):
            self.errors.append("resumed workflows still running at the settling limit")
        self.stop_services()

    def stop_services(self) -> None:
        """SIGTERM (drain), then SIGKILL each service's session: nothing keeps writing."""
        with self.services_lock:
            running = [p for p in self.services.values() if p is not None]
            self.services = {}
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in running:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.kill_all()  # orphaned workers of killed nodes too

    def close(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        self.stop_chaos.set()
        self.stop_days.set()
        self.procs.kill_all(close=True)
        for thread in self.threads:
            thread.join(15)  # a PostgreSQL restart in flight ends before the stop
        self.procs.kill_all()
        if self.db is not None:
            self.db.dispose()
        if self.postgres is not None:
            self.postgres.stop("immediate")
            shutil.rmtree(self.postgres.folder, ignore_errors=True)
        self.procs.pid_file.unlink(missing_ok=True)  # the watchdog has nothing left to do


# ---------------------------------------------------------------- checks ---------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def check(soak: Soak) -> dict[str, int]:
    """What must hold after any amount of chaos, read from the database and the store."""
    assert soak.db is not None
    out: dict[str, int] = {}
    with soak.db.read() as conn:
        wf_status = Counter(s for (s,) in conn.execute(sa.select(workflows.c.status)))
        job_rows = list(conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.attempts)))
        successes = Counter(
            oid
            for (oid,) in conn.execute(
                sa.select(events.c.object_id).where(
                    events.c.kind == "job.success", events.c.object_type == "job"
                )
            )
        )
        solutions_per_job = Counter(
            int(j)
            for (j,) in conn.execute(
                sa.select(solutions.c.job_id).where(solutions.c.job_id.is_not(None))
            )
        )
        rows = list(
            conn.execute(
                sa.select(
                    datasets.c.location,
                    datasets.c.bytes,
                    datasets.c.checksum,
                    datasets.c.state,
                    datasets.c.transfer_id,
                    datasets.c.deleted_at,
                )
            )
        )
        stale = conn.execute(
            sa.select(sa.func.count()).where(transfers.c.status == "RUNNING")
        ).scalar_one()
    live = [r for r in rows if r.deleted_at is None and r.state != "DELETED"]
    delivered = Counter(r.checksum for r in live if r.transfer_id is not None)
    jobs_twice = {j for j, n in successes.items() if n > 1} | {
        str(j) for j, n in solutions_per_job.items() if n > 1
    }
    files_twice = sum(n - 1 for n in delivered.values() if n > 1)

    expected: set[str] = set()
    for folder in soak.deliveries:
        expected |= {f.checksum for f in read_manifest(folder).files}
    registered = {r.checksum for r in live if r.transfer_id is not None and r.state == "AVAILABLE"}

    corrupted = missing = 0
    for r in live:
        path = Path(r.location)
        if not path.is_file():
            missing += 1
        elif path.stat().st_size != r.bytes or sha256_of(path) != r.checksum:
            corrupted += 1
            log(f"corrupted: {path}")
    known = {str(Path(r.location)) for r in live}
    products = soak.home / "products"
    files = [p for p in products.rglob("*") if p.is_file()] if products.exists() else []
    orphans = [p for p in files if str(p) not in known]
    for p in orphans[:20]:
        log(f"orphaned: {p.relative_to(soak.home)}")
    staging = soak.home / "transfer" / "staging"
    leftovers = [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
    # dpct's own check must agree: it is what an operator runs after an incident.
    checked = subprocess.run(
        soak.dpct("store", "check", "--grace", "0", "--json"),
        env=soak.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(checked.stdout)
        store_check_problems = int(report["unresolved"])
    except (ValueError, KeyError):
        log(f"dpct store check exited {checked.returncode}: {checked.stderr.strip()[-500:]}")
        store_check_problems = 1

    out["workflows"] = sum(wf_status.values())
    out["workflows SUCCESS"] = wf_status.get("SUCCESS", 0)
    out["workflows resumed"] = soak.resumed
    out["not_final"] = out["workflows"] - out["workflows SUCCESS"]
    out["jobs"] = len(job_rows)
    out["jobs SUCCESS"] = sum(1 for j in job_rows if j.status == "SUCCESS")
    out["retries"] = sum(max(0, j.attempts - 1) for j in job_rows)
    out["deliveries"] = len(soak.deliveries)
    out["delivered files"] = len(expected)
    out["lost"] = len(expected - registered)
    out["duplicated jobs"] = len(jobs_twice)
    out["duplicated files"] = files_twice
    out["duplicated"] = len(jobs_twice) + files_twice
    out["corrupted"] = corrupted
    out["missing"] = missing
    out["orphaned"] = len(orphans)
    out["store check problems"] = store_check_problems
    out["staging leftovers"] = len(leftovers)
    out["transfers left RUNNING"] = int(stale)
    tracebacks: Counter[str] = Counter()
    for path in soak.logs.glob("*.log"):
        kind = path.stem.split("-")[0].removeprefix("pfs.").rstrip("0123456789")
        tracebacks[kind] += path.read_text(errors="replace").count("Traceback")
    for kind in ("coordinator", "pr", "pull", "cli"):
        out[f"tracebacks {kind.replace('pr', 'node')}"] = tracebacks[kind]
    return out


MUST_BE_ZERO = (
    "not_final",
    "lost",
    "duplicated",
    "corrupted",
    "missing",
    "orphaned",
    "store check problems",
)


def summary_rows(soak: Soak, found: dict[str, int], case: str, seconds: float) -> list[Row]:
    rows = [Row("dpct", case, "minutes", round(seconds / 60, 2), "min")]
    for kind in ("node", "worker", "coordinator", "pull", "postgres"):
        rows.append(Row("dpct", case, f"killed {kind}", soak.killed.get(kind, 0), "count"))
    for kind in ("node", "coordinator"):  # restarted by the soak, as systemd would
        rows.append(Row("dpct", case, f"exited alone {kind}", soak.crashed[kind], "count"))
    rows.append(Row("dpct", case, "pulls", soak.pulls.get("started", 0), "count"))
    rows.append(Row("dpct", case, "pulls failed, not killed", soak.pulls.get("failed", 0), "count"))
    for name, value in found.items():
        rows.append(Row("dpct", case, name, value, "count"))
    return rows


# ---------------------------------------------------------------- main -----------


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=None, help="chaos time (default 30)")
    p.add_argument("--ci", action="store_true", help="the CI preset: 5 minutes")
    p.add_argument("--sqlite", action="store_true", help="soak SQLite (no database restarts)")
    p.add_argument("--pipelines", default=",".join(PIPELINES), help="shipped pipelines to run")
    p.add_argument("--scale", type=float, default=SCALE, help="simulator volume scale")
    p.add_argument("--chaos-every", type=float, default=8.0, help="mean seconds between strikes")
    p.add_argument("--backlog", type=int, default=6, help="unfinished workflows before a new day")
    p.add_argument("--settle-s", type=float, default=240.0, help="settling limit, seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, home)")
    args = p.parse_args()
    if args.minutes is None:
        # --ci: 3.5 minutes of days and chaos, then settling: about 5 minutes in all
        args.minutes = 2.0 if args.quick else 3.5 if args.ci else 30.0
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 30)
    tmp_root = HERE.parent / ".bench-tmp"
    tmp_root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=tmp_root))
    log(f"soak: {args.minutes} min, seed {args.seed}, work folder {work}")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)  # SIGINT too: a background job may ignore it
    soak = Soak(args, work)
    t0 = time.monotonic()
    stopped_by = ""
    try:
        soak.run()
        found = check(soak)
    except KeyboardInterrupt as err:
        found, stopped_by = {}, str(err) or "Ctrl-C"
    finally:
        soak.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not found:
        log(f"soak interrupted ({stopped_by}): its processes and database were stopped")
        return 130
    case = ("sqlite" if args.sqlite else "postgresql") + f" {args.pipelines}"
    rows = summary_rows(soak, found, case, time.monotonic() - t0)
    report("soak", rows, args.json)
    failed = [k for k in MUST_BE_ZERO if found[k]] + soak.errors
    if failed:
        print(f"soak FAILED: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
