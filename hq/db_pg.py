"""HQ storage on PostgreSQL: the same ``fn(conn)`` interface as SQLite, for many HQ processes.

Driver: psycopg 3 (its C implementation from the ``psycopg[binary]`` wheel) with
``psycopg_pool``, synchronous connections driven from thread pools. The domain functions are
synchronous ``fn(conn)`` (they run on SQLite's writer thread too), so a thread per in-flight
transaction maps onto them unchanged; asyncpg would be faster per query on paper but needs
every one of HQ's ~280 queries rewritten as coroutines with ``$n`` parameters, and a booking
spends its time in a handful of round trips, not in decoding. psycopg prepares a statement
server-side after its fifth use (``prepare_threshold``), so hot queries skip the planner.

Every write runs in a ``SERIALIZABLE`` transaction and is retried (with jittered back-off)
when PostgreSQL answers a serialization failure or a deadlock: whatever a function checks
before it writes (a slot's free places, an event already stored, a notification already
claimed) still holds at its commit, whichever HQ process on whichever host ran it. That is
also the isolation PostgreSQL-compatible distributed databases (CockroachDB, YugabyteDB) run
by default and expect clients to retry. Functions marked ``read_committed`` (hq/db.py: the
booking writes, whose capacity rests on one conditional upsert of the slot's counter row) run
at READ COMMITTED instead: SERIALIZABLE predicate-locks the bookings index by page, so
bookings of neighbouring slots failed each other. Functions marked ``autocommit`` (the online
booking: one read, then one statement of data-modifying CTEs) run with no BEGIN/COMMIT at
all. Reads run in ``REPEATABLE READ READ ONLY`` transactions: one consistent snapshot per
function, as SQLite's readers have.

Threads: ``pool_size`` writer and ``read_connections`` reader threads per process
(:class:`_Workers`; a writer takes every booking queued when it wakes and writes them in one
transaction, :meth:`PostgresDatabase._write_batch`) and one chainer thread (:class:`_Chainer`)
that chains queued booking events into their branch's outbox, one pass at a time over every
process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
import queue
from concurrent.futures import Future
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format
from psycopg_pool import ConnectionPool

from hq.db import BadData, Busy, DatabaseClosed, IntegrityError

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 32  # batchable writes sharing one transaction
MAX_ATTEMPTS = 1000
RETRY_FOR_S = 30.0  # then the caller gets Busy (a 503), never a 500
RETRY_ERRORS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
MIGRATION_LOCK = 0x5347_4851  # pg_advisory_lock key: one migrating process at a time
CHAIN_LOCK = 0x5347_4852  # one chain pass at a time over every HQ process (hq/outbox.py sequence)


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``), outside quotes."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class Row(tuple):  # type: ignore[type-arg]
    """A result row addressable by index and by (case-insensitive) column name, like sqlite3.Row."""

    __slots__ = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                i = self._index[key]
            except KeyError:
                try:
                    i = self._index[key.lower()]
                except KeyError:
                    raise IndexError(f"no such column: {key}") from None
            return tuple.__getitem__(self, i)
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=2048)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    index = {n: i for i, n in enumerate(names)}
    index.update({n.lower(): i for i, n in enumerate(names) if n.lower() not in index})
    return type("Row", (Row,), {"__slots__": (), "_index": index, "_names": names})


def row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    # The names straight from the result: cursor.description builds a Column object per column
    # per statement (a few % of a booking's CPU).
    res = cursor.pgresult
    if res is None or not res.nfields:
        return tuple
    return _row_class(tuple(res.fname(i).decode() for i in range(res.nfields)))


class _NumericLoader(Loader):
    """numeric (SUM and AVG of integers) as int when whole, else float, as SQLite returns them."""

    def load(self, data: Any) -> Any:
        text = bytes(data)
        if text in (b"NaN", b"Infinity", b"-Infinity"):
            return float(text)
        return int(text) if b"." not in text else float(text)


class _BoolAsIntDumper(Dumper):
    """Booleans are stored as INTEGER 0/1 (portable SQL), so Python bools go out as int8."""

    oid = psycopg.adapters.types["int8"].oid
    format = Format.TEXT

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_dumper(bool, _BoolAsIntDumper)


class PgConn:
    """A psycopg connection behind HQ's small connection interface (``?`` params, named rows)."""

    dialect = "postgresql"
    __slots__ = ("raw", "queued", "facts")

    def __init__(self, raw: psycopg.Connection[Any], facts: dict[Any, Any] | None = None) -> None:
        self.raw = raw
        self.queued = False  # the transaction queued events for the chain (hq/outbox.py emit defer)
        self.facts = facts  # this database's booking facts kept between writes (hq/booking.py _target)

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> psycopg.Cursor[Any]:
        try:
            return self.raw.execute(translate(sql), tuple(params or ()))
        except pg_errors.IntegrityError as err:
            raise IntegrityError(str(err).splitlines()[0]) from err
        except (pg_errors.DataError, ValueError) as err:
            if isinstance(err, (pg_errors.SerializationFailure,)):
                raise
            raise BadData(str(err).splitlines()[0]) from err

    def executemany(self, sql: str, seq: Any) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        try:
            cur.executemany(translate(sql), [tuple(p) for p in seq])
        except pg_errors.IntegrityError as err:
            raise IntegrityError(str(err).splitlines()[0]) from err
        except (pg_errors.DataError, ValueError) as err:
            raise BadData(str(err).splitlines()[0]) from err
        return cur

    def executescript(self, script: str) -> None:
        from hq.migrations import split_statements
        for stmt in split_statements(script):
            self.raw.execute(stmt)


class PostgresDatabase:
    """The HQ database on PostgreSQL: ``await db.write(fn)`` and ``await db.read(fn)``."""

    dialect = "postgresql"

    def __init__(self, url: str, *, readers: int = 4, writers: int = 4) -> None:
        self.url = url
        self._closed = False
        self._writers, self._readers = max(1, writers), max(1, readers)
        self.pool = ConnectionPool(url, min_size=1, max_size=self._writers + self._readers + 1,
                                   kwargs={"autocommit": True, "row_factory": row_factory},
                                   configure=_configure, open=True, name="hq", timeout=60)
        self._wpool = _Workers(self._writers, "hq-pg-write", batch=self._write_batch, batched=self._write_batched)
        self._rpool = _Workers(self._readers, "hq-pg-read")
        self.retries = 0  # serialization failures retried (a measure of contention)
        self._retries_lock = threading.Lock()
        # fn(conn) chaining queued events, truthy when more may be left (set by hq.app.open_hq:
        # it needs HQ's key)
        self.chain: Callable[[Any], Any] | None = None
        self._chainer = _Chainer(self._chain_pass)
        self.facts: dict[Any, Any] = {}  # hq/booking.py: slot days' facts, per database (never shared)

    def migrate(self) -> list[int]:
        from hq.migrations import apply_migrations
        with self.pool.connection() as raw:
            raw.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                return apply_migrations(PgConn(raw))
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    # -- transactions ---------------------------------------------------------------------
    def write_sync(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` in a SERIALIZABLE transaction, retried on serialization failure or deadlock.

        If it queued events for a branch chain, they are chained before this returns (by the
        chainer thread's next pass, hq/outbox.py)."""
        result, queued = self._write_only(fn)
        if queued:
            self._chainer.wait()
        return result

    def _write_only(self, fn: Callable[[Any], T]) -> tuple[T, bool]:
        """The transaction alone: (its result, whether it queued events for the chain)."""
        with self.pool.connection() as raw:
            conn = PgConn(raw, self.facts)
            result = self._attempts(raw, conn, fn)
            return result, conn.queued and self.chain is not None

    def _write_batched(self, fn: Callable[[Any], T]) -> tuple[T, bool]:
        """A batchable write taken alone (the writer threads batch those queued together)."""
        return self._write_only(fn)

    def _write_batch(self, fns: list[Callable[[Any], Any]]) -> list[tuple[bool, Any]]:
        """Batchable writes (:func:`hq.db.batchable`: each writes with one statement, or not at all
        when it raises) in one READ COMMITTED transaction: one commit and one hand-over between
        threads for all of them. In the order of their ``order`` keys, so that two batches take
        slot rows in the same order. A write that raises (a full slot) is its own outcome and the
        others go on; a database error (a deadlock, bad data) rolls the batch back and each runs
        again alone, with its own retries."""
        if len(fns) == 1:
            return [self._outcome(self._write_batched, fns[0])]
        order = sorted(range(len(fns)), key=lambda i: getattr(fns[i], "order", ()))
        outcomes: list[tuple[bool, Any]] = [(False, None)] * len(fns)
        queued = committing = False
        with self.pool.connection() as raw:
            conn = PgConn(raw, self.facts)
            try:
                raw.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                for i in order:
                    conn.queued = False
                    try:
                        outcomes[i] = (True, fns[i](conn))
                    except Exception as err:  # its own refusal, unless the transaction is lost
                        if raw.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                            raise
                        outcomes[i] = (False, err)
                    queued = queued or conn.queued
                committing = True
                raw.execute("COMMIT")
            except Exception as err:
                if committing and not isinstance(err, RETRY_ERRORS):
                    # the commit's outcome is unknown (e.g. the connection broke meanwhile):
                    # running them again could write them twice; each gets the error, as alone
                    return [(False, err)] * len(fns)
                try:
                    if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        raw.execute("ROLLBACK")
                except psycopg.Error:  # the connection is gone: the pool drops it
                    pass
                logger.debug("a batch of %d writes fell back to one at a time", len(fns), exc_info=True)
                fallback = True
            else:
                fallback = False
        if fallback:  # on a connection of their own, each with its retries
            return [self._outcome(self._write_batched, fn) for fn in fns]
        queued = queued and self.chain is not None
        return [(True, (value, queued)) if ok else (ok, value) for ok, value in outcomes]

    @staticmethod
    def _outcome(call: Callable[[Any], Any], arg: Any) -> tuple[bool, Any]:
        try:
            return True, call(arg)
        except BaseException as err:
            return False, err

    def _chain_pass(self) -> None:
        """One pass of the chainer thread: chain everything queued (any process's) by now."""
        chain = self.chain
        if chain is None:
            return
        with self.pool.connection() as raw:
            # One pass at a time over all HQ processes: passes of two processes read the same
            # queue, and under SERIALIZABLE one of them failed and redid its signing. Taken
            # before BEGIN, so the pass's snapshot already holds the previous pass's commit.
            raw.execute("SELECT pg_advisory_lock(%s)", (CHAIN_LOCK,))
            try:
                while self._attempts(raw, PgConn(raw), chain):  # truthy: a full batch, more may wait
                    pass
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s)", (CHAIN_LOCK,))

    def _attempts(self, raw: psycopg.Connection[Any], conn: PgConn, fn: Callable[[Any], T]) -> T:
        delay = 0.001
        isolation = getattr(fn, "isolation", "SERIALIZABLE")
        begin = None if isolation == "AUTOCOMMIT" else f"BEGIN ISOLATION LEVEL {isolation}"
        give_up = time.monotonic() + RETRY_FOR_S
        for attempt in range(1, MAX_ATTEMPTS + 1):
            conn.queued = False
            try:
                if begin is None:  # hq/db.py autocommit: each statement its own transaction
                    return fn(conn)
                raw.execute(begin)
                result = fn(conn)
                raw.execute("COMMIT")
                return result
            except BaseException as err:
                if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.execute("ROLLBACK")
                if not _retryable(err):
                    raise
                if attempt == MAX_ATTEMPTS or time.monotonic() > give_up:
                    raise Busy("the database is too busy, try again") from err
            with self._retries_lock:
                self.retries += 1
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.05)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_sync(self, fn: Callable[[Any], T]) -> T:
        with self.pool.connection() as raw:
            raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                return fn(PgConn(raw))
            finally:
                if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raw.execute("ROLLBACK")

    async def write(self, fn: Callable[[Any], T]) -> T:
        """``fn`` in a writer thread. If it queued events for a branch chain, the chainer thread
        is woken to chain them, and the answer does not wait for that: the events committed with
        the write (``outbox_queue``), so they are as durable as the booking, and whatever reads a
        branch's chain first chains what is queued (:meth:`chain_now`). A booking's latency then
        no longer includes the chain's passes, which run one at a time over every HQ process."""
        if self._closed:
            raise DatabaseClosed("database is closed")
        batch = getattr(fn, "batchable", False)
        result, queued = await self._wpool.run(self._write_batched if batch else self._write_only, fn)
        if queued:
            self._chainer.kick()
        return result

    async def chain_now(self) -> None:
        """Wait for a chain pass that starts now: every event queued by a commit before this call
        is then in its branch's outbox (unless the pass failed: it is logged, the rows stay
        queued for the next one)."""
        if self.chain is not None:
            await self._chainer.request_async()

    async def read(self, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise DatabaseClosed("database is closed")
        return await self._rpool.run(self.read_sync, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wpool.shutdown()
        self._chainer.stop()
        self._rpool.shutdown()
        self.pool.close()


class _Workers:
    """A fixed set of threads running ``fn(arg)`` for coroutines: a C ``SimpleQueue`` in, one
    ``call_soon_threadsafe`` out. ThreadPoolExecutor + run_in_executor cost a booking about a
    fifth of HQ's event-loop CPU (a concurrent Future with its Condition, the idle semaphore,
    chaining into an asyncio future); queued work still runs before :meth:`shutdown` returns."""

    def __init__(self, n: int, name: str, batch: Callable[[list[Any]], list[tuple[bool, Any]]] | None = None,
                 batched: Callable[[Any], Any] | None = None) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # items whose fn is ``batched`` are taken together, as many as are queued (up to
        # MAX_BATCH), and run by ``batch(args) -> [(ok, outcome)]`` in one go
        self._batch, self._batched = batch, batched
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[[Any], T], arg: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, arg))
        return await future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._batch is not None and item[2] == self._batched:
                if self._run_batch(item):
                    return
                continue
            self._run_one(item)

    @staticmethod
    def _run_one(item: Any) -> None:
        loop, future, fn, arg = item
        try:
            outcome, ok = fn(arg), True
        except BaseException as err:  # handed to the awaiting coroutine
            outcome, ok = err, False
        try:
            loop.call_soon_threadsafe(_settle, future, ok, outcome)
        except RuntimeError:  # its loop has closed: nobody is waiting
            pass

    def _run_batch(self, first: Any) -> bool:
        """Take the batchable items queued behind ``first`` and run them together; then the other
        items taken meanwhile, in order. True if this thread's stop was among them."""
        assert self._batch is not None
        items, others, stop = [first], [], False
        while len(items) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # shutting down: this thread stops after what it took
                stop = True
                break
            (items if item[2] == self._batched else others).append(item)
        try:
            outcomes = self._batch([item[3] for item in items])
        except BaseException as err:  # the batch hands each its own outcome; this is a bug's
            outcomes = [(False, err)] * len(items)
        by_loop: dict[Any, list[tuple[Any, bool, Any]]] = {}
        for (loop, future, _, _), (ok, outcome) in zip(items, outcomes):
            by_loop.setdefault(loop, []).append((future, ok, outcome))
        for loop, settled in by_loop.items():  # one wake-up of each loop for the batch
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:
                pass
        for item in others:
            self._run_one(item)
        return stop

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, outcome in settled:
        _settle(future, ok, outcome)


def _settle(future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


class _Chainer:
    """One thread per process that runs the chain pass for every transaction that queued events.

    A commit that queued events kicks it (:meth:`kick`) and is answered without waiting.
    Readers of a chain get a future (:meth:`request`) resolved when a pass that *started after
    their request* has finished, so it saw every row committed before. Kicks and requests
    arriving during a pass share the next one: under load one pass chains the events of every
    booking committed meanwhile (group commit for the chain), and no writer thread or
    connection waits for it. A failed pass is logged and its callers released anyway: the rows
    stay queued for the next pass of any process, a branch's pull, or a direct event of that
    branch."""

    def __init__(self, run_pass: Callable[[], None]) -> None:
        self._run_pass = run_pass
        self._cond = threading.Condition()
        self._waiting: list[Any] = []  # concurrent.futures and asyncio futures
        self._kicked = False  # a pass is wanted that nobody waits for
        self._stopping = False
        self._thread: threading.Thread | None = None

    def request(self) -> Future[None]:
        future: Future[None] = Future()
        self._enqueue(future)
        return future

    def request_async(self) -> asyncio.Future[None]:
        """The same as :meth:`request` for a coroutine: an asyncio future of the running loop,
        resolved from the chainer thread with one ``call_soon_threadsafe`` per pass."""
        future = asyncio.get_running_loop().create_future()
        self._enqueue(future)
        return future

    def _enqueue(self, future: Any) -> None:
        with self._cond:
            if self._stopping:
                _release([future])
                return
            self._start()
            self._waiting.append(future)
            self._cond.notify()

    def _start(self) -> None:  # under self._cond
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hq-pg-chain", daemon=True)
            self._thread.start()

    def wait(self) -> None:
        self.request().result()

    def kick(self) -> None:
        """Ask for a pass and do not wait for it (commits that queued events): a kick during a
        pass, like a request, starts the next one."""
        with self._cond:
            if self._stopping:  # close() drains what was asked before it; the next start the rest
                return
            self._start()
            self._kicked = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._kicked and not self._stopping:
                    self._cond.wait()
                if not self._waiting and not self._kicked:
                    return
                batch, self._waiting, self._kicked = self._waiting, [], False
            try:
                self._run_pass()
            except Exception:  # committed all the same: the next pass (any process) chains it
                logger.exception("chaining queued events failed")
            _release(batch)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=60)


def _release(futures: list[Any]) -> None:
    """Resolve waiters: concurrent futures at once, asyncio ones on their own loop (one
    thread-safe call per loop)."""
    loops: dict[Any, list[asyncio.Future[None]]] = {}
    for future in futures:
        if isinstance(future, asyncio.Future):
            loops.setdefault(future.get_loop(), []).append(future)
        else:
            future.set_result(None)
    for loop, waiting in loops.items():
        try:
            loop.call_soon_threadsafe(_resolve, waiting)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a cancelled request's future stays cancelled
            future.set_result(None)


def _retryable(err: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:  # also when a domain error wraps PostgreSQL's
        if isinstance(e, RETRY_ERRORS):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def rows(cur: Any) -> Iterator[Any]:
    yield from cur
