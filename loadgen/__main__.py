import sys

from loadgen.cli import main

# Guarded: the signing workers are spawned processes, which import the parent's main module.
if __name__ == "__main__":
    sys.exit(main())
