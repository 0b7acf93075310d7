"""A signature-checking worker: ``python -m factory.gates._worker`` reads one job as JSON from
stdin, runs it and writes its problems as JSON to stdout (see ``_parallel``)."""

from __future__ import annotations

import json
import sys

from factory.gates import _parallel

_JOBS = {"_envelope_chunk": _parallel._envelope_chunk, "_note_chunk": _parallel._note_chunk}


def main() -> None:
    name, args = _parallel.decode_job(sys.stdin.buffer.read())
    json.dump(_JOBS[name](*args), sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
