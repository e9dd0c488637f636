"""One process of the distributed tests (``tests/test_distributed.py`` starts it with torchrun's
environment variables): ``python tests/dist_worker.py SPEC_JSON``.

It trains ``TrainConfig.from_flat(spec["config"])``, records which of the functions that write files it
called, optionally fails on purpose (``spec["fail"] = {"rank", "step", "how": "hang" | "crash"}``)
and writes what happened to ``spec["result_dir"]/rank<R>.json``.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from graphattn.text import train as T
from graphattn.text.config import TrainConfig


def main() -> None:
    spec = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    writes = []
    for name in ("save_checkpoint", "plot_curves", "plot_attention", "_open_log"):
        real = getattr(T, name)

        def recorded(*args, _real=real, _name=name, **kwargs):
            writes.append(_name)
            return _real(*args, **kwargs)

        setattr(T, name, recorded)
    fail = spec.get("fail")
    if fail and fail["rank"] == rank:
        real_step, calls = T.train_step, [0]

        def failing_step(*args, **kwargs):
            calls[0] += 1
            if calls[0] == fail["step"]:
                if fail["how"] == "hang":
                    time.sleep(600)
                raise RuntimeError("injected failure")
            return real_step(*args, **kwargs)

        T.train_step = failing_step
    result: dict = {"rank": rank}
    start = time.perf_counter()
    try:
        r = T.train(TrainConfig.from_flat(spec["config"]))
        result.update(losses=r.losses, step=r.step, valid=r.valid)
    except Exception as e:  # the test inspects the error
        result.update(error=type(e).__name__, message=str(e))
    result.update(seconds=time.perf_counter() - start, writes=writes)
    Path(spec["result_dir"], f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
