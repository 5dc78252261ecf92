"""`python eval.py [overrides]`: see README. The logic lives in gensuite.eval."""

from gensuite.entry import evaluate

if __name__ == "__main__":
    evaluate()
