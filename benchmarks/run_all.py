"""``python benchmarks/run_all.py [options]`` -- the same as ``python -m benchmarks.run [options]``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
