"""The face: the `rlhf` command (cli.py) and the pipeline that chains the stages (pipeline.py).

The only layer that may import the stages, the commands and the sweep package.
"""
