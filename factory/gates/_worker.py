"""A signature-checking worker: ``python -m factory.gates._worker`` reads one pickled job from
stdin, runs it and writes the pickled result to stdout (see ``_parallel``)."""

from __future__ import annotations

import pickle
import sys

from factory.gates import _parallel

_JOBS = {"_envelope_chunk": _parallel._envelope_chunk, "_note_chunk": _parallel._note_chunk}


def main() -> None:
    name, args = pickle.load(sys.stdin.buffer)
    result = _JOBS[name](*args)
    pickle.dump(result, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
