"""`python train.py [overrides]`: see README. The logic lives in gensuite.train."""

from gensuite.entry import train

if __name__ == "__main__":
    train()
