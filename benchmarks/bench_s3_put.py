"""`factory store put` of 256 MiB to an S3 server, against boto3's `upload_file` of the same file.

All run as whole processes against the same local S3 server (moto's, on loopback),
interleaved, each into a fresh prefix. ``factory store put`` hashes the file in one read
pass, then uploads it in parts straight to its final key, re-hashing each part, and
completes the upload only when the digest matches (``factory/store/_s3put.py``);
boto3's managed upload (multipart, 8 MiB parts, 10 threads) only uploads. One more row
times a stream that can be read only once (a pipe): hashed while it is uploaded under a
temporary key, then copied server-side to its final key (the path every put took
before). Each row gives wall time, CPU time (user + system of the process) and peak
memory (max RSS: none holds the file in memory). `aws s3 cp` joins when the AWS CLI is
installed. The load average is printed: on a shared machine it moves every figure,
which is why the runs are interleaved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks._util import machine, median, print_table

_BOTO3_UPLOAD = (
    "import sys, boto3; boto3.client('s3').upload_file(sys.argv[1], sys.argv[2], sys.argv[3])"
)
# A put of standard input (a pipe); argv: home.
_PIPE_PUT = "import sys; from factory.store import Store; Store(sys.argv[1]).blobs.put(sys.stdin.buffer)"


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(i.to_bytes(8, "little") + block[8:])  # every MiB differs


def _run(argv: list[str], env: dict[str, str], pipe_from: Path | None = None) -> tuple[float, float, float]:
    """Wall time (s), CPU time (s) and peak RSS (MiB) of one whole process, failing loudly if it fails.

    With ``pipe_from``, the process reads that file from a pipe (``cat FILE |``).
    """
    start = time.perf_counter()
    cat = subprocess.Popen(["cat", str(pipe_from)], stdout=subprocess.PIPE) if pipe_from else None
    proc = subprocess.Popen(argv, env=env, stdin=cat.stdout if cat else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if cat is not None:
        cat.stdout.close()  # the reader holds the pipe now
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if cat is not None:
        cat.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    size = args.mib << 20
    from tests._servers import S3Server

    factory_bin = str(Path(sys.executable).with_name("factory"))
    aws_bin = shutil.which("aws")
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    server = S3Server.start()
    try:
        bucket = server.create_bucket("bench")
        client = server.client()
        src = work / "big.bin"
        _make_file(src, size)
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FACTORY_"))}
        env = {**base, **server.env(), "AWS_ENDPOINT_URL": server.endpoint, "CI": "1"}
        tools = {
            "factory store put": lambda prefix: [factory_bin, "store", "put", str(src), "--home", f"s3://{bucket}/{prefix}"],
            "boto3 upload_file": lambda prefix: [sys.executable, "-c", _BOTO3_UPLOAD, str(src), bucket, f"{prefix}/big.bin"],
            "factory put of a pipe (copy)": lambda prefix: [sys.executable, "-c", _PIPE_PUT, f"s3://{bucket}/{prefix}"],
        }
        if aws_bin:
            tools["aws s3 cp"] = lambda prefix: [aws_bin, "s3", "cp", "--quiet", str(src), f"s3://{bucket}/{prefix}/big.bin"]
        times: dict[str, list[float]] = {k: [] for k in tools}
        cpus: dict[str, list[float]] = {k: [] for k in tools}
        peaks: dict[str, list[float]] = {k: [] for k in tools}
        loads = [os.getloadavg()[0]]
        for _ in range(repeat):  # interleaved, so drift in the machine hits every tool alike
            for name, command in tools.items():
                prefix = uuid.uuid4().hex
                run_env = {**env, "FACTORY_CATALOG": str(work / f"{prefix}.db")}
                elapsed, cpu, peak = _run(command(prefix), run_env, src if "pipe" in name else None)
                times[name].append(elapsed)
                cpus[name].append(cpu)
                peaks[name].append(peak)
                loads.append(os.getloadavg()[0])
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                    for obj in page.get("Contents", []):  # keep the server's memory flat between runs
                        client.delete_object(Bucket=bucket, Key=obj["Key"])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    medians = {k: median(v) for k, v in times.items()}
    peak = {k: max(v) for k, v in peaks.items()}
    peer = medians["boto3 upload_file"]
    ours = medians["factory store put"]
    cpu = {k: median(v) for k, v in cpus.items()}
    rows = [(k, medians[k], min(times[k]), max(times[k]), cpu[k], peak[k], medians[k] / peer) for k in tools]
    print(f"put of {args.mib} MiB to a local S3 server (moto), median of {repeat} runs, on {machine()}; "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} (median {median(loads):.1f})")
    print_table("whole-process wall time (s)", ["tool", "median", "min", "max", "CPU s (median)", "peak RSS MiB", "x boto3"], rows)
    print(f"factory store put / boto3 upload_file: {ours / peer:.2f}x")
    return {"size_mib": args.mib, "load_average_median": median(loads), **{f"median_s[{k}]": v for k, v in medians.items()},
            **{f"cpu_s[{k}]": v for k, v in cpu.items()}, **{f"peak_rss_mib[{k}]": v for k, v in peak.items()},
            "ratio_vs_boto3": ours / peer}


if __name__ == "__main__":
    main()
