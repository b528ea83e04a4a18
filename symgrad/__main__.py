"""`python -m symgrad`: the same command line as the `symgrad` console script."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
