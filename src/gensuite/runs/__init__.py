"""Run folders and what is read from them: checkpoints (read, checked, built), the trust allowlist, atomic
checkpoint files, the run lock, multi-node run folders, resume rules, sample files and sample grids."""
