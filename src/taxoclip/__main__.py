"""``python -m taxoclip`` (also what ``torchrun -m taxoclip`` runs)."""

from taxoclip.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
