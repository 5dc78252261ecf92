"""A family that lives outside gensuite (tests/test_user_family.py): a user's own package."""
