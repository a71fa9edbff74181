"""``python -m simclr_watches``: the CLI, also what ``torchrun -m simclr_watches`` starts."""

from simclr_watches.cli import app

if __name__ == "__main__":
    app()
