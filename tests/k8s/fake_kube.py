"""A tiny Kubernetes API server on 127.0.0.1 for the orchestration tests.

It implements only what ``mlops.orchestration`` calls, over real HTTP, so the real
``kubernetes`` client (serialisation, URLs, errors) is exercised:

- ``POST   /apis/batch/v1/namespaces/{ns}/jobs``               create (409 if it exists,
  422 with the message of ``refused[name]``, as an admission policy refuses)
- ``GET    /apis/batch/v1/namespaces/{ns}/jobs/{name}[/status]`` read (404 if missing)
- ``DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}``         delete
- ``GET    /api/v1/namespaces/{ns}/pods?labelSelector=job-name=X``  the Job's one pod
  (once the Job finished, its container terminated with ``exit_codes[stage]``, or 0)
- ``GET    /api/v1/namespaces/{ns}/pods/{pod}/log``             its log
- ``GET    /apis/batch/v1/namespaces/{ns}/cronjobs/{name}``     a CronJob put in ``cronjobs``
- ``PATCH  /apis/batch/v1/namespaces/{ns}/cronjobs/{name}``     its ``spec.suspend`` only

A created Job finishes after ``polls_to_finish`` reads, as ``outcomes[name]`` or
``outcomes[stage]`` says (``Complete``, ``Failed`` or ``Running`` for never). With an
``executor`` it is run for real instead: ``executor(job)`` (in a thread) returns an exit
code and the pod's log, and the Job completes or fails by that code. ``events`` records
creations, finishes and deletions in order.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

JOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
LOG_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
CRONJOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/cronjobs/([^/]+)$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_of(job: dict[str, Any]) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["args"][0]


def finished(job: dict[str, Any], outcome: str) -> dict[str, Any]:
    """``job`` with the status Kubernetes gives a Job that completed or failed."""
    if outcome == "Complete":
        status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    else:
        status = {
            "failed": 2,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }
    for condition in status["conditions"]:
        condition["lastTransitionTime"] = _now()
    return {**job, "status": status}


class FakeKube:
    def __init__(
        self,
        polls_to_finish: int = 2,
        executor: Callable[[dict[str, Any]], tuple[int, str]] | None = None,
    ) -> None:
        self.polls_to_finish = polls_to_finish
        self.executor = executor
        self.logs: dict[str, str] = {}
        self.failing_reads = 0  # the next this many reads of a Job answer 500
        self.outcomes: dict[str, str] = {}
        # The exit code of a failed Job's pod, by stage (default 1; a completed one's is 0).
        self.exit_codes: dict[str, int] = {}
        # Job name -> the message an admission policy refuses its creation with (422).
        self.refused: dict[str, str] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.cronjobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads: dict[tuple[str, str], int] = {}
        self.events: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.authorization: set[str] = set()
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"authorization": "test-token"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def add_job(self, job: dict[str, Any], outcome: str | None = None) -> None:
        """Put a Job in place as if created earlier (finished when ``outcome`` is given)."""
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        self.jobs[key] = finished(job, outcome) if outcome in ("Complete", "Failed") else job

    def _execute(self, key: tuple[str, str]) -> None:
        with self.lock:
            job = json.loads(json.dumps(self.jobs[key]))
        try:
            code, log = self.executor(job)  # type: ignore[misc]
        except Exception as exc:  # a broken executor fails the Job, visibly
            code, log = 1, f"executor error: {exc!r}"
        outcome = "Complete" if code == 0 else "Failed"
        with self.lock:
            self.logs[key[1]] = log
            if key in self.jobs:
                self.jobs[key] = finished(self.jobs[key], outcome)
                self.events.append((outcome.lower(), key[1]))

    def pod_status(self, job: dict[str, Any]) -> dict[str, Any]:
        """A finished Job's pod: its container terminated with the Job's exit code."""
        conditions = {c["type"] for c in (job.get("status") or {}).get("conditions") or []}
        if not conditions & {"Complete", "Failed"}:
            return {"phase": "Running"}
        code = 0 if "Complete" in conditions else self.exit_codes.get(stage_of(job), 1)
        terminated = {"exitCode": code, "finishedAt": _now(), "reason": "Completed"}
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "mlops",
                    "image": "mlops",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }

    def created(self) -> list[str]:
        return [name for kind, name in self.events if kind == "create"]

    # HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                with fake.lock:
                    fake.requests.append((method, url.path))
                    fake.authorization.add(self.headers.get("Authorization", ""))
                    self._dispatch(method, url.path, parse_qs(url.query))

            def _cronjob(self, method: str, key: tuple[str, str]) -> None:
                if key not in fake.cronjobs:
                    return self._status(404, "NotFound", f'cronjobs "{key[1]}" not found')
                if method == "PATCH":
                    length = int(self.headers.get("Content-Length", "0"))
                    patch = json.loads(self.rfile.read(length))
                    if set(patch) != {"spec"} or set(patch["spec"]) != {"suspend"}:
                        return self._status(422, "Invalid", f"unexpected patch {patch}")
                    fake.cronjobs[key]["spec"]["suspend"] = patch["spec"]["suspend"]
                    fake.events.append(("patch", key[1]))
                return self._send(200, fake.cronjobs[key])

            def _dispatch(self, method: str, path: str, query: dict[str, list[str]]) -> None:
                cronjob_match = CRONJOB_PATH.match(path)
                if cronjob_match and method in ("GET", "PATCH"):
                    return self._cronjob(method, (cronjob_match.group(1), cronjob_match.group(2)))
                job_match, pods_match, log_match = (
                    JOB_PATH.match(path),
                    PODS_PATH.match(path),
                    LOG_PATH.match(path),
                )
                if job_match and method == "POST" and not job_match.group(2):
                    length = int(self.headers.get("Content-Length", "0"))
                    body = json.loads(self.rfile.read(length))
                    namespace = job_match.group(1)
                    key = (namespace, body["metadata"]["name"])
                    if key in fake.jobs:
                        return self._status(409, "AlreadyExists", f"jobs {key[1]} already exists")
                    if key[1] in fake.refused:
                        return self._status(422, "Invalid", fake.refused[key[1]])
                    body["metadata"].setdefault("namespace", namespace)
                    body["metadata"]["uid"] = f"uid-{len(fake.events)}"
                    body["metadata"]["creationTimestamp"] = _now()
                    body["status"] = {}
                    fake.jobs[key] = body
                    fake.reads[key] = 0
                    fake.events.append(("create", key[1]))
                    if fake.executor is not None:
                        threading.Thread(target=fake._execute, args=(key,), daemon=True).start()
                    return self._send(201, body)
                if job_match and job_match.group(2):
                    key = (job_match.group(1), job_match.group(2))
                    if key not in fake.jobs:
                        return self._status(404, "NotFound", f'jobs "{key[1]}" not found')
                    if method == "DELETE":
                        del fake.jobs[key]
                        fake.events.append(("delete", key[1]))
                        return self._send(200, {"kind": "Status", "status": "Success"})
                    if method == "GET" and fake.failing_reads > 0:
                        fake.failing_reads -= 1
                        return self._status(500, "InternalError", "etcdserver: leader changed")
                    if method == "GET":
                        job = fake.jobs[key]
                        if fake.executor is None and not job.get("status", {}).get("conditions"):
                            fake.reads[key] = fake.reads.get(key, 0) + 1
                            outcome = fake.outcomes.get(
                                key[1], fake.outcomes.get(stage_of(job), "Complete")
                            )
                            if fake.reads[key] >= fake.polls_to_finish and outcome != "Running":
                                job = fake.jobs[key] = finished(job, outcome)
                                fake.events.append((outcome.lower(), key[1]))
                        return self._send(200, job)
                if pods_match and method == "GET":
                    selector = query.get("labelSelector", [""])[0]
                    name = selector.removeprefix("job-name=")
                    items = []
                    if (pods_match.group(1), name) in fake.jobs:
                        job = fake.jobs[(pods_match.group(1), name)]
                        items.append(
                            {
                                "metadata": {
                                    "name": f"{name}-x7k2p",
                                    "namespace": pods_match.group(1),
                                    "creationTimestamp": _now(),
                                    "labels": {"job-name": name},
                                },
                                "status": fake.pod_status(job),
                            }
                        )
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
                if log_match and method == "GET":
                    pod = log_match.group(2)
                    text = fake.logs.get(pod.removesuffix("-x7k2p"))
                    if text is None:
                        text = f"error: stage failed in {pod}\nTraceback: DataError\n"
                    return self._send(200, text, "text/plain")
                fake.unexpected.append(f"{method} {path}")
                return self._status(404, "NotFound", f"fake API has no {method} {path}")

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_PATCH(self) -> None:
                self._route("PATCH")

        return Handler
