"""Shim: `python eval.py [overrides]` runs gensuite.eval (see README)."""

from gensuite.eval import main

if __name__ == "__main__":
    main()
