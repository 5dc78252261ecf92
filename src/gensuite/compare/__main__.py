"""``python -m gensuite.compare [overrides]``: the same as the checkout's ``compare.py``."""

from gensuite.entry import compare as main

if __name__ == "__main__":
    main()
