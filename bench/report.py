"""docs/benchmarks.md in sections, so a run that measures only some of them keeps the others.

A section is the text between `<!-- begin NAME -->` and `<!-- end NAME -->`; text outside every
section (notes written by people) is kept as it is.
"""

import os
import platform
import re
import sqlite3
from pathlib import Path

import psycopg
from tests.support.server import PG_ADMIN_URL


def replace_section(document: str, name: str, body: str) -> str:
    """`document` with section `name` holding `body` (appended when it has no such section)."""
    block = f"<!-- begin {name} -->\n{body.strip()}\n<!-- end {name} -->"
    pattern = re.compile(
        rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S
    )
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return f"{document.rstrip()}\n\n{block}\n"


def machine_facts() -> str:
    """What the numbers were measured on: CPU, cores, memory, versions, load at the start."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            pg = row[0] if row else "unknown"
    except psycopg.Error:
        pg = "not reachable"
    load1, load5, _ = os.getloadavg()
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; SQLite "
        f"{sqlite3.sqlite_version}; PostgreSQL {pg}; load average {load1:.1f} / {load5:.1f} "
        "(1 / 5 min) when the run began"
    )
