"""Shim: `python train.py [overrides]` runs gensuite.train (see README)."""

from gensuite.train import main

if __name__ == "__main__":
    main()
