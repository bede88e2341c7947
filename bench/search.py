"""Finding jobs (issue #15): listings with each filter over 100,000 jobs, in process (the registry alone).

    .venv/bin/python -m bench.search                   # 100,000 jobs
    .venv/bin/python -m bench.search --jobs 1000000    # the registry's bound
    .venv/bin/python -m bench.search --quick           # the test suite: 5,000 jobs

The jobs are the job JSON captured from Orthanc 1.12.7 (bench/data), given new ids, creation and completion
times over 10 days, descriptions (1 in 100 "Ward 7") and studies (each named by about 100 jobs); 9 in 10 are
finished, kept serialised as the history is. Each listing is asked as ``GET /jobs?limit=100`` asks it: its
first 100 jobs and their total, so a search reads every candidate; the best of 5 runs. Printed as a table,
and written to ``--output`` as JSON when asked.
"""

import argparse
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orthanc_jobs.api.filters import parse_job_query
from orthanc_jobs.core.model import orthanc_timestamp
from orthanc_jobs.core.registry import Registry
from orthanc_jobs.core.store import SqliteStore

CAPTURED = Path(__file__).parent / "data" / "jobs-1.12.7.json"
SERVERS = 10
PAGE = 100
START = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
DAYS = 10


def _study(number: int) -> str:
    return "-".join(f"{(number * 7919 + part) % 2**32:08x}" for part in range(5))


def fill(jobs: int, seed: int = 15) -> Registry:
    """A registry of ``jobs`` jobs on SERVERS servers, made from the captured ones."""
    generator = random.Random(seed)
    templates = json.loads(CAPTURED.read_text())
    registry = Registry(SqliteStore(":memory:"), not_responding_after=1e9, stopped_after=1e9)
    servers = [
        registry.register_server(
            name=f"orthanc-{n}", url=f"http://orthanc-{n}:8042", incarnation=f"i{n}", token=""
        )
        for n in range(SERVERS)
    ]
    registry.subscribers.clear()  # the store's writes are not what is measured
    for number in range(jobs):
        created = START + generator.random() * DAYS * 86400
        content = dict(generator.choice(templates))
        finished = generator.random() < 0.9
        state = ("Success" if generator.random() < 0.9 else "Failure") if finished else "Running"
        content.update(
            ID=str(uuid.UUID(int=generator.getrandbits(128), version=4)),
            State=state,
            CreationTime=orthanc_timestamp(created),
            Timestamp=orthanc_timestamp(created + 60),
            Content={
                **content["Content"],
                "Description": "Ward 7, nightly copy" if number % 100 == 0 else "REST API",
                "ParentResources": [_study(generator.randrange(max(10, jobs // 100)))],
            },
        )
        if finished:
            content["CompletionTime"] = orthanc_timestamp(created + 60)
        else:
            content.pop("CompletionTime", None)
        registry.apply_snapshot(servers[number % SERVERS], content)
    return registry


def listings() -> dict[str, dict[str, list[str]]]:
    """What is measured: a name, and the listing's query parameters."""
    second_day = f"{datetime.fromtimestamp(START, UTC) + timedelta(days=1):%Y-%m-%d}"
    last_day = f"{datetime.fromtimestamp(START, UTC) + timedelta(days=DAYS - 1):%Y-%m-%d}"
    return {
        "all (no filter)": {},
        "status=Failure": {"status": ["Failure"]},
        "status=Success&type=archive": {"status": ["Success"], "type": ["archive"]},
        "created-since/until (one day)": {
            "created-since": [second_day],
            "created-until": [second_day],
        },
        "ids= (50 ids)": {"ids": []},  # filled in by measure: ids of the registry
        "q=ward 7 (1 in 100)": {"q": ["ward 7"]},
        "q=ward 7&status=Failure": {"q": ["ward 7"], "status": ["Failure"]},
        "q=archive (a Type)": {"q": ["archive"]},
        "q=rest api (most Contents)": {"q": ["rest api"]},
        "q=2026 (times only: none)": {"q": ["2026"]},
        "resource= (a study)": {"resource": [_study(7)]},
        "completed-since (last day)": {"completed-since": [last_day]},
    }


def _best_of(runs: int, call: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def measure(jobs: int, runs: int = 5) -> list[dict[str, Any]]:
    registry = fill(jobs)
    every = registry.list_jobs()
    figures = []
    for name, params in listings().items():
        if "ids" in params:
            params = {"ids": [",".join(job.id for job in every[:: max(1, len(every) // 50)][:50])]}
        query = parse_job_query(registry, params)
        total, page = registry.page_jobs(query, limit=PAGE)
        expected = [job for job in every if query.matches(job)]
        assert (total, page) == (len(expected), expected[:PAGE]), name
        seconds = _best_of(runs, lambda query=query: registry.page_jobs(query, limit=PAGE))  # type: ignore[misc]
        figures.append({"listing": name, "jobs": jobs, "matching": total, "ms": round(seconds * 1000, 2)})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 jobs, one run each")
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    jobs, runs = (5_000, 1) if options.quick else (options.jobs, 5)
    figures = measure(jobs, runs)
    print(f"{'listing (first 100 and the total)':<36} {'matching':>9} {'ms':>9}")
    for figure in figures:
        print(f"{figure['listing']:<36} {figure['matching']:>9} {figure['ms']:>9.2f}")
    if options.output is not None:
        options.output.write_text(json.dumps({"jobs": jobs, "figures": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
