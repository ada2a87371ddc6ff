"""Two builds of the extension side by side in one process: which gathers faster?

The gather is memory-bound and this VM's memory speed drifts from hour to hour, so two runs of
``bytepair bench`` (old build, then new) can differ by more than a change to the kernel. This
loads two builds of ``bytepair._native`` into one process and times both, with numpy's
``T[ids].mean(1)``, on the same fresh ids every round, the CPU caches evicted before every call
(as ``bytepair bench`` does), each implementation first in turn. Every output is checked against
numpy's.

    python benches/ab_gather.py OLD/_native.so NEW/_native.so [rounds]

``OLD`` and ``NEW`` are as for ``ab_encode.py``. Prints the median milliseconds and the ratio to
numpy for a float32 and a float16 table of [50257, 768], 32 bags of 256 random ids.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

from ab_encode import load


def main(old_path: str, new_path: str, rounds: int = 61) -> None:
    import numpy as np

    from bytepair.bench import cache_evictor

    mods = {"old": load(old_path, "ab_old"), "new": load(new_path, "ab_new")}
    rng = np.random.default_rng(0)
    V, D, B, L = 50_257, 768, 32, 256
    tables = {"f32": rng.standard_normal((V, D), dtype=np.float32)}
    tables["f16"] = tables["f32"].astype(np.float16)
    wide16 = tables["f16"].astype(np.float32)
    ids = [rng.integers(0, V, (B, L)) for _ in range(rounds)]
    # The expected means, computed before timing (numpy's temporaries would change its timing).
    wants = {dtype: [t[i].mean(1) for i in ids] for dtype, t in (("f32", tables["f32"]), ("f16", wide16))}
    evict = cache_evictor(np)

    def gather(mod: Any, table: Any) -> Callable[[Any], Any]:
        return lambda i: mod.embed_gather(table, i.reshape(-1), None, (B, L), "mean", None, False)

    fns: dict[str, Callable[[Any], Any]] = {"numpy": lambda i: tables["f32"][i].mean(1)}
    for name, mod in mods.items():
        for dtype, table in tables.items():
            fns[f"{name} {dtype}"] = gather(mod, table)
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            evict()
            t0 = time.perf_counter()
            out = fns[name](ids[r])
            times[name].append(time.perf_counter() - t0)
            worst = float(np.abs(out - wants["f16" if name.endswith("f16") else "f32"][r]).max())
            if worst > 1e-5:
                raise SystemExit(f"{name}: max |diff| {worst:.3g} from numpy's mean")
    base = statistics.median(times["numpy"])
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:8s} {med * 1e3:7.3f} ms   {base / med:5.2f}x numpy")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
