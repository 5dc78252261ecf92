"""The command-line layer: the composed config, argv and override checks, Hydra's resolvers and run-folder
hooks, sweeps, loggers, device memory and precision, and the sampling settings of sample.py / eval.py."""
