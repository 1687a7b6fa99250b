"""Serving benchmark: ``mlops serve`` against ``ludwig serve`` and ``mlflow models serve``.

The same registered model (see ``model_setup.py``) is served by each server in turn, alone
on the machine, as one process on 127.0.0.1:

* ``mlops serve``: ``POST /predict`` with one JSON record (and, as a second row, with
  ``ludwig serve``'s form-encoded fields, which it also accepts);
* ``ludwig serve -m <model>``: ``POST /predict`` with form-encoded fields;
* ``mlflow models serve -m <model> --env-manager local``: ``POST /invocations`` with
  ``{"dataframe_records": [record]}``.

Each request carries one real row of the sample's features (cycling through 500 of
them). The client is this script: an asyncio HTTP/1.1 client with keep-alive
connections (no library overhead), one connection per concurrent caller.

* Closed loop at concurrency 1, 8 and 32: every caller sends its next request when the
  previous answer arrives; after a warm-up, requests/s and p50/p99 latency over the
  measured window.
* Open loop at a fixed 200 requests/s: requests are sent on schedule whatever the
  answers, latency counted from the scheduled time (no coordinated omission); requests
  still unanswered 5 s after the last one was due count as timed out.

Before measuring, each server's answers for 200 rows are compared with ``mlops serve``'s.

    .venv/bin/python benchmarks/serve_benchmark.py                 # the full table
    .venv/bin/python benchmarks/serve_benchmark.py --seconds 5 --servers mlops,ludwig
    .venv/bin/python benchmarks/serve_benchmark.py --servers mlops,mlops-form  # mlops only

Goal: at least 10x ``ludwig serve``'s throughput at concurrency 8, and p99 under 20 ms at
200 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_setup import (
    VENV_BIN,
    BenchModel,
    clean_env,
    ensure_model,
    features,
    free_port,
    wait_http,
)

from mlops.training.model_config import default_config_path, input_names

HOST = "127.0.0.1"
SAMPLE_ROWS = 500


# The servers.


@dataclass
class Server:
    key: str
    label: str
    command: list[str]
    ready_path: str
    path: str
    env: dict[str, str]
    encode: object  # record -> (content type, body)
    parse: object  # response body -> next_return prediction
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, logs: Path) -> float:
        began = time.perf_counter()
        self.log = logs / f"{self.key}.log"
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"http://{HOST}:{self.port}{self.ready_path}", process=self.process)
        return time.perf_counter() - began

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _json_record(record: dict, with_close: bool = True) -> tuple[str, bytes]:
    body = record if with_close else {k: v for k, v in record.items() if k != "close"}
    return "application/json", json.dumps(body).encode()


def _form(record: dict) -> tuple[str, bytes]:
    fields = {k: v for k, v in record.items() if k != "close"}
    return "application/x-www-form-urlencoded", urllib.parse.urlencode(fields).encode()


def _mlflow(record: dict) -> tuple[str, bytes]:
    fields = {k: v for k, v in record.items() if k != "close"}
    return "application/json", json.dumps({"dataframe_records": [fields]}).encode()


def _parse_any(body: bytes) -> float:
    data = json.loads(body)
    if isinstance(data, dict) and "predictions" in data:
        data = data["predictions"]
    if isinstance(data, list):
        data = data[0]
    return float(data["next_return_predictions"])


SERVER_KEYS = ("mlops", "mlops-form", "ludwig", "mlflow")


def servers(model: BenchModel, wanted: list[str]) -> list[Server]:
    env = clean_env(model.home, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    made = []
    for key in wanted:
        port = free_port()
        if key in {"mlops", "mlops-form"}:
            server = _mlops_server(key, port, env)
        elif key == "ludwig":
            server = _ludwig_server(model, port, env)
        elif key == "mlflow":
            server = _mlflow_server(model, port, env)
        else:
            raise SystemExit(f"unknown server {key!r}: {', '.join(SERVER_KEYS)}")
        server.port = port
        made.append(server)
    return made


def _mlops_server(key: str, port: int, env: dict[str, str]) -> Server:
    return Server(
        key,
        "mlops serve" + (" (ludwig form)" if key == "mlops-form" else " (JSON)"),
        [str(VENV_BIN / "mlops"), "serve", "--host", HOST, "--port", str(port)],
        "/readyz",
        "/predict",
        env,
        _form if key == "mlops-form" else _json_record,
        _parse_any,
    )


def _ludwig_server(model: BenchModel, port: int, env: dict[str, str]) -> Server:
    command = [str(VENV_BIN / "ludwig"), "serve", "-m", str(model.ludwig_dir)]
    command += ["-H", HOST, "-p", str(port), "-l", "warning"]
    return Server("ludwig", "ludwig serve", command, "/", "/predict", env, _form, _parse_any)


def _mlflow_server(model: BenchModel, port: int, env: dict[str, str]) -> Server:
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model.mlflow_dir)]
    command += ["-h", HOST, "-p", str(port), "--env-manager", "local", "-w", "1"]
    return Server(
        "mlflow", "mlflow models serve", command, "/ping", "/invocations", env, _mlflow, _parse_any
    )


# The client.


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            body = await self.reader.read()
        return status, body

    def close(self) -> None:
        self.writer.close()


def raw_requests(server: Server, records: list[dict]) -> list[bytes]:
    out = []
    for record in records:
        content_type, body = server.encode(record)  # type: ignore[operator]
        head = (
            f"POST {server.path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


@dataclass
class Result:
    completed: int = 0
    errors: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency quantile in ms; timeouts count as infinitely slow."""
        values = sorted(self.latencies) + [math.inf] * self.timeouts
        if not values:
            return math.nan
        return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def closed_loop(
    port: int, raws: list[bytes], concurrency: int, warmup: float, seconds: float
) -> Result:
    result = Result()
    clock = time.perf_counter  # uvloop's loop.time() counts whole milliseconds
    start = clock() + warmup
    end = start + seconds

    async def caller(offset: int) -> None:
        conn = await Connection.open(port)
        i = offset
        try:
            while True:
                sent = clock()
                if sent >= end:
                    return
                try:
                    status, _ = await conn.send(raws[i % len(raws)])
                except (OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    conn.close()
                    conn = await Connection.open(port)
                    continue
                done = clock()
                i += concurrency
                if sent >= start and done <= end:
                    if status == 200:
                        result.completed += 1
                        result.latencies.append(done - sent)
                    else:
                        result.errors += 1
        finally:
            conn.close()

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    result.seconds = seconds
    return result


async def open_loop(
    port: int, raws: list[bytes], rate: float, seconds: float, drain: float = 5.0
) -> Result:
    result = Result()
    clock = time.perf_counter
    idle: list[Connection] = []
    total = int(rate * seconds)

    async def one(i: int, due: float) -> None:
        reused = bool(idle)
        conn = idle.pop() if reused else await Connection.open(port)
        try:
            status, _ = await conn.send(raws[i % len(raws)])
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            if not reused:
                result.errors += 1
                return
            # The server closed a keep-alive connection that sat idle (uvicorn: after
            # 5 s); like any HTTP client, send again on a new one.
            conn = await Connection.open(port)
            try:
                status, _ = await conn.send(raws[i % len(raws)])
            except (OSError, asyncio.IncompleteReadError):
                result.errors += 1
                conn.close()
                return
        idle.append(conn)
        if status == 200:
            result.completed += 1
            result.latencies.append(clock() - due)
        else:
            result.errors += 1

    # Warm the connections and the server first.
    await closed_loop(port, raws, 4, 0.0, 1.0)
    start = clock() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain)
    for task in pending:
        task.cancel()
    result.timeouts = len(pending)
    result.seconds = seconds
    for conn in idle:
        conn.close()
    return result


async def answers(port: int, raws: list[bytes], parse: object) -> list[float]:
    conn = await Connection.open(port)
    out = []
    try:
        for raw in raws:
            status, body = await conn.send(raw)
            if status != 200:
                raise RuntimeError(f"status {status}: {body[:300]!r}")
            out.append(parse(body))  # type: ignore[operator]
    finally:
        conn.close()
    return out


# The run.


def measure(coroutine):  # -> Result
    """Run one measurement with this client's garbage collector out of the way.

    The client process holds pandas, SQLAlchemy and MLflow objects; a full collection in
    it would stall the sender and show up as server latency.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(coroutine)
    finally:
        gc.enable()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", type=Path, default=None, help="MLOPS_HOME with (or for) the model"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_KEYS),
        help="comma-separated, from: %(default)s; `--servers mlops,mlops-form` skips the "
        "slow ludwig and mlflow servers",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    return parser.parse_args()


def _records(model: BenchModel) -> list[dict]:
    """Real rows of the sample: the default model's inputs, and the close."""
    frame = features(model.home)
    inputs = [*input_names(yaml.safe_load(default_config_path().read_text())), "close"]
    sample = frame.sample(n=min(SAMPLE_ROWS, len(frame)), random_state=0)
    return [
        {k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
        for row in sample[inputs].to_dict("records")
    ]


def main() -> None:
    args = _arguments()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    home = args.home or Path(tempfile.mkdtemp(prefix="mlops-serve-bench-"))
    model = ensure_model(home)
    records = _records(model)
    logs = Path(tempfile.mkdtemp(prefix="mlops-serve-bench-logs-"))
    print(
        f"Model {model.name} v{model.version} from {model.home}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start; "
        f"{args.seconds:g} s per cell after {args.warmup:g} s warm-up; server logs in {logs}",
        flush=True,
    )
    rows: list[dict] = []
    reference: list[float] | None = None
    for server in servers(model, args.servers.split(",")):
        startup = server.start(logs)
        try:
            raws = raw_requests(server, records)
            got = asyncio.run(answers(server.port, raws[:200], server.parse))
            if reference is None:
                reference = got
            rows.append(_measure(server, raws, args, startup, got, reference))
        finally:
            server.stop()
    print()
    print(f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print(table(rows, args))


def _measure(
    server: Server,
    raws: list[bytes],
    args: argparse.Namespace,
    startup: float,
    got: list[float],
    reference: list[float],
) -> dict:
    """One server's row of the table: closed loops, then the fixed rate."""
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, reference, strict=True))
    row: dict = {"server": server.label, "startup_s": startup, "max_rel_diff": worst}
    for c in args.concurrency:
        r = measure(closed_loop(server.port, raws, c, args.warmup, args.seconds))
        row[c] = r
        print(
            f"  {server.label:28s} c={c:<3d} {r.rps:9.1f} req/s  "
            f"p50 {r.percentile(0.5):8.2f} ms  p99 {r.percentile(0.99):8.2f} ms  "
            f"errors {r.errors}",
            flush=True,
        )
    r = measure(open_loop(server.port, raws, args.rate, args.rate_seconds))
    row["rate"] = r
    sent = int(args.rate * args.rate_seconds)
    print(
        f"  {server.label:28s} {args.rate:g} req/s fixed: "
        f"p50 {r.percentile(0.5):8.2f} ms  p99 {r.percentile(0.99):8.2f} ms  "
        f"answered {r.completed}/{sent} errors {r.errors} timeouts {r.timeouts}",
        flush=True,
    )
    return row


def _ms(value: float) -> str:
    return "timeout" if math.isinf(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = []
    head = "| server | startup s | " + " | ".join(
        f"c={c} req/s | c={c} p50 ms | c={c} p99 ms" for c in args.concurrency
    )
    lines.append(
        head + f" | {args.rate:g} req/s p50 ms | {args.rate:g} req/s p99 ms | answers vs mlops |"
    )
    lines.append("|" + "---|" * (3 + 3 * len(args.concurrency) + 2))
    for row in rows:
        cells = [row["server"], f"{row['startup_s']:.1f}"]
        for c in args.concurrency:
            r = row[c]
            cells += [f"{r.rps:,.0f}", _ms(r.percentile(0.5)), _ms(r.percentile(0.99))]
        rate = row["rate"]
        sent = int(args.rate * args.rate_seconds)
        if rate.timeouts:
            cells += [f"saturated: {rate.completed}/{sent} answered", "-"]
        else:
            cells += [_ms(rate.percentile(0.5)), _ms(rate.percentile(0.99))]
        cells.append(
            "identical" if row["max_rel_diff"] == 0 else f"max rel diff {row['max_rel_diff']:.1e}"
        )
        lines.append("| " + " | ".join(cells) + " |")
    base = next((r for r in rows if r["server"] == "ludwig serve"), None)
    if base is not None:
        lines.append("")
        for row in rows:
            if row is base:
                continue
            ratios = ", ".join(
                f"c={c}: {row[c].rps / base[c].rps:.1f}x" for c in args.concurrency if base[c].rps
            )
            lines.append(f"- {row['server']} vs ludwig serve: {ratios}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
