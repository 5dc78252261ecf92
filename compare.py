"""`python compare.py [overrides]`: see README. The logic lives in gensuite.compare."""

from gensuite.entry import compare

if __name__ == "__main__":
    compare()
