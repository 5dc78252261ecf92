"""Shim: `python sample.py [overrides]` runs gensuite.sample (see README)."""

from gensuite.sample import main

if __name__ == "__main__":
    main()
