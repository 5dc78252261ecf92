"""`python sample.py [overrides]`: see README. The logic lives in gensuite.sample."""

from gensuite.entry import sample

if __name__ == "__main__":
    sample()
