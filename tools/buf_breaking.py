"""`buf breaking` of the working tree's contracts against a git ref (default: main).

Both sides are compiled to descriptor images by tools/gen_protos.py, since the protovalidate
import cannot be fetched by buf here. A ref without protos/ (the first commit) has nothing to
break.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in the repository, capturing output."""
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buf", required=True, help="path of the buf binary")
    parser.add_argument("--against", default="main", help="git ref to compare with")
    args = parser.parse_args()
    if git("rev-parse", "--verify", "--quiet", f"{args.against}^{{commit}}").returncode != 0:
        print(f"buf breaking: no ref {args.against}; nothing to compare")
        return 0
    if not git("ls-tree", "-d", args.against, "protos").stdout:
        print(f"buf breaking: {args.against} has no protos/; nothing to compare")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = git("archive", args.against, "protos")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        baseline = Path(tmp) / "baseline.binpb"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tools" / "gen_protos.py"),
                "image",
                "--protos",
                str(Path(tmp) / "protos"),
                "--out",
                str(baseline),
            ],
            check=True,
        )
        current = ROOT / "gen" / "python" / "image.binpb"
        result = subprocess.run(
            [
                args.buf,
                "breaking",
                str(current),
                "--against",
                str(baseline),
                "--config",
                str(ROOT / "buf.yaml"),
            ],
            cwd=ROOT,
            check=False,
        )
    if result.returncode == 0:
        print(f"buf breaking: no incompatible change against {args.against}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
