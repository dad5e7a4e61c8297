"""Every input a run reads exists and is not empty, before prep starts: ``data.input`` (data=raw),
``data.shards`` (data=webdataset) and the user eval sets (``eval.datasets``) an eval task names.

Local paths are checked whole (every file of a brace pattern); on S3 a file is HEAD-ed, a folder listed for one
object, and a brace pattern's first and last objects HEAD-ed (a few requests, whatever the pattern's size). S3 is
read as prep reads it: credentials and ``AWS_ENDPOINT_URL_S3`` from the environment, else ``storage.endpoint_url``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from ito_core.config import RunConfig
from ito_core.data.eval_sets import parse_source
from ito_core.data.files import is_s3
from ito_core.eval.names import eval_plan
from ito_core.preflight.finding import Finding, failed, ok
from ito_core.preflight.storage import CREDENTIALS_FIX, PROBE_DEADLINE_S
from ito_core.storage import split_s3_url
from ito_core.storage.s3 import S3Calls

CHECK = "inputs"
MISSING_SHOWN = 3  # missing files of a pattern named in the message


@dataclass(frozen=True)
class Input:
    key: str  # the config key that names it
    path: str  # local path, s3:// URL, or a brace pattern of either
    kind: str  # file | folder | tars (a folder of .tar files) | pattern
    fix: str


def run_inputs(cfg: RunConfig) -> list[Input]:
    """What the prep of ``cfg`` reads: its training input and the user eval sets its eval tasks use."""
    data, found = cfg.data, []
    if data.name == "raw":
        kind = {"table": "file", "folder": "folder"}.get(data.input_kind, "pattern")
        if data.input_kind == "img2dataset" and not is_s3(data.input) and "{" not in data.input:
            kind = "tars" if Path(data.input).expanduser().is_dir() else "file"
        found.append(Input("data.input", data.input, kind, f"point data.input at your {data.input_kind} data"))
    elif data.name == "webdataset":
        found += [Input("data.shards", pattern, "pattern", "fix the pattern in data.shards") for pattern in data.shards]
    for name in eval_plan(cfg.eval):
        if name not in cfg.eval.datasets:
            continue  # an embedded set: it ships with the code
        source, key = parse_source(name, cfg.eval.datasets[name]), f"eval.datasets.{name}"
        fix = f"fix the path in {key}, or point the eval.* keys that name {name!r} at another set"
        found.append(Input(key, source.path, {"karpathy": "file", "wds": "pattern"}.get(source.layout, "folder"), fix))
        if "images" in source.options:
            found.append(Input(key, source.options["images"], "folder", fix))
    return found


def check_inputs(inputs: list[Input], *, endpoint_url: str = "") -> list[Finding]:
    """One failed finding per missing or empty input, else one ok; ``endpoint_url``: ``storage.endpoint_url``."""
    if not inputs:
        return [ok(CHECK, "no user data to check (embedded data only)")]
    calls = None
    if any(is_s3(i.path) for i in inputs):
        calls = S3Calls(endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or endpoint_url,
                        retry_deadline_s=PROBE_DEADLINE_S)
        if calls.session.get_credentials() is None:
            first = next(i for i in inputs if is_s3(i.path))
            return [failed(CHECK, f"config {first.key}={first.path!r}: no AWS credentials found to read it; "
                                  f"{CREDENTIALS_FIX}")]
    problems = [(i, problem) for i in inputs if (problem := _problem(i, calls))]
    if not problems:
        return [ok(CHECK, f"{len(inputs)} input(s) found and non-empty: {', '.join(i.key for i in inputs)}")]
    return [failed(CHECK, f"config {i.key}={i.path!r}: {problem}; {i.fix}") for i, problem in problems]


def _problem(inp: Input, calls: S3Calls | None) -> str:
    """What is wrong with ``inp`` ("" when nothing is)."""
    try:
        if inp.kind == "pattern":
            return _pattern_problem(inp.path, calls)
        if is_s3(inp.path):
            assert calls is not None
            return _s3_folder_problem(inp.path, calls) if inp.kind == "folder" else _s3_file_problem(inp.path, calls)
        return _local_problem(Path(inp.path).expanduser(), inp.kind)
    except Exception as err:  # noqa: BLE001 - a store error (access denied, no bucket) is the finding
        return str(err)


def _local_problem(path: Path, kind: str) -> str:
    if kind == "file":
        if not path.is_file():
            return "no such file" if not path.exists() else "is not a file"
        return "" if path.stat().st_size else "is an empty file"
    if not path.is_dir():
        return "no such folder" if not path.exists() else "is not a folder"
    if kind == "tars":
        return "" if any(path.glob("*.tar")) else "the folder holds no .tar files"
    with os.scandir(path) as entries:
        return "" if any(True for _ in entries) else "is an empty folder"


def _pattern_problem(pattern: str, calls: S3Calls | None) -> str:
    urls = list(braceexpand(pattern))
    if is_s3(pattern):
        assert calls is not None
        return next((f"{url}: {problem}" for url in dict.fromkeys([urls[0], urls[-1]])
                     if (problem := _s3_file_problem(url, calls))), "")
    bad = [url for url in urls if _local_problem(Path(url).expanduser(), "file")]
    if not bad:
        return ""
    shown = ", ".join(f"{url} ({_local_problem(Path(url).expanduser(), 'file')})" for url in bad[:MISSING_SHOWN])
    return f"{len(bad)} of its {len(urls)} file(s) are missing or empty, e.g. {shown}"


def _s3_file_problem(url: str, calls: S3Calls) -> str:
    bucket, key = split_s3_url(url, need_key=True)
    try:
        head = calls.call(f"check {url}", calls.client.head_object, Bucket=bucket, Key=key)
    except FileNotFoundError:
        return "no such object (or no such bucket)"
    return "" if head.get("ContentLength", 0) else "is an empty object"


def _s3_folder_problem(url: str, calls: S3Calls) -> str:
    bucket, prefix = split_s3_url(url)
    folder = f"{prefix.strip('/')}/".lstrip("/")
    listing = calls.call(f"list {url}", calls.client.list_objects_v2, Bucket=bucket, Prefix=folder, MaxKeys=1)
    return "" if listing.get("KeyCount", 0) else "no objects under this prefix"
