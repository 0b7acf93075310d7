"""The reference peer of bench_serve: the same model behind a plain FastAPI app in one uvicorn process.

``python -m benchmarks._fastapi_peer --home HOME --digest D --port P`` loads the package
from the store and answers ``POST /v2/models/{name}/infer`` with the same JSON as the
model servers: no contract checks, no batching, no Ray.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def build_app(home: str, digest: str) -> FastAPI:
    import numpy as np
    import torch

    from factory.contract import load
    from factory.settings import Settings
    from factory.store import Store

    torch.set_num_threads(1)
    module = load(Store(home, settings=Settings(home=home)), digest).module
    app = FastAPI()

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> JSONResponse:
        body = await request.json()
        tensor = body["inputs"][0]
        x = torch.from_numpy(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
        with torch.inference_mode():
            out = module(x)
        return JSONResponse({"model_name": name, "outputs": [
            {"name": key, "shape": list(value.shape), "data": value.ravel().tolist()} for key, value in out.items()]})

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--digest", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.home, args.digest), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
