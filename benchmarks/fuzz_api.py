"""Bad requests, generated, against a live `clipsearch serve` (issue 28).

    python benchmarks/fuzz_api.py [--examples 200] [--photos DIR] [--seed 0]

schemathesis reads the server's OpenAPI schema and, for every operation, sends
``--examples`` requests made from it, valid and invalid (wrong types, missing fields, values
out of range), signed in with the server's token, over real HTTP on 127.0.0.1 (uvicorn, the
middleware, streamed files). Each answer is checked: no 5xx status, the body matches the
schema the operation documents, the content type is the documented one. Failures are
counted, not stopped at, and the first few are shown with the request that caused them.

The index is real: COCO-mini's 101 photos from ../shared/data (written out with
`clipsearch datasets export`), else ``--photos DIR``, embedded with the tiny random model.
Also sends every operation a request without the token, which must be a 401.

The short version runs in the test suite (tests/test_fuzz_api.py, ~200 requests in process).
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.openapi import from_url
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from clipsearch.server.discovery import read_info

REPO = Path(__file__).resolve().parent.parent
COCO = REPO.parent / "shared" / "data" / "coco_mini" / "images-00000-of-00001.parquet"
TINY = "random:clipsearch-tiny"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def clipsearch(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "clipsearch", *args], check=True)


def build_index(work: Path, photos: Path | None) -> Path:
    if photos is None:
        if not COCO.exists():
            raise SystemExit(f"no {COCO}: give --photos DIR")
        photos = work / "photos"
        clipsearch("datasets", "export", str(COCO), str(photos))
    index_dir = work / "index"
    clipsearch("index", str(photos), "--index", str(index_dir), "--model", TINY)
    return index_dir


def start_server(index_dir: Path) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "clipsearch", "serve", "--index", str(index_dir)]
    process = subprocess.Popen([*command, "--port", "0", "--log-level", "error"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        info = read_info(index_dir)
        if info is not None and info.pid == process.pid and info.token:
            return process, info.url, info.token
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []

    def record(self, case, response, failure: Exception | None) -> None:
        self.requests += 1
        self.statuses[response.status_code] += 1
        if failure is None:
            return
        kind = type(failure).__name__
        for inner in getattr(failure, "exceptions", [failure]):
            self.failures[getattr(inner, "title", type(inner).__name__)] += 1
        if len(self.examples) < 5:
            first_line = str(failure).strip().splitlines()[0] if str(failure).strip() else kind
            self.examples.append(f"{case.method} {case.formatted_path} {case.query}: {first_line}")


def fuzz(operation, base_url: str, headers: dict[str, str], examples: int, tally: Tally) -> None:
    requests = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=requests)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def send(case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as failure:  # schemathesis's failures: counted, not raised
            tally.record(case, response, failure)
        else:
            tally.record(case, response, None)

    send()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="requests per operation")
    parser.add_argument("--photos", type=Path, help="photos to index instead of COCO-mini")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clipsearch-fuzz-") as work:
        index_dir = build_index(Path(work), args.photos)
        process, url, token = start_server(index_dir)
        started = time.perf_counter()
        try:
            signed_in = {"Authorization": f"Bearer {token}"}
            schema = from_url(f"{url}/openapi.json", headers=signed_in)
            tally, refused = Tally(), collections.Counter()
            operations = [result.ok() for result in schema.get_all_operations()]
            for operation in operations:
                fuzz(operation, url, signed_in, args.examples, tally)
                # The same operation without the token: 401, nothing else.
                case = operation.as_strategy().example()
                refused[case.call(base_url=url, timeout=60).status_code] += 1
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        took = time.perf_counter() - started

    print(f"\n{len(operations)} operations, {tally.requests:,} generated requests in {took:.0f} s")
    print(f"statuses: {dict(sorted(tally.statuses.items()))}")
    print(f"5xx: {sum(n for s, n in tally.statuses.items() if s >= 500)}")
    print(f"failed checks: {dict(tally.failures) or 0}")
    for example in tally.examples:
        print(f"  {example}")
    print(f"without the token: {dict(refused)}")


if __name__ == "__main__":
    main()
