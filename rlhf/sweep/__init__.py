"""`rlhf sweep`: grid, random and Optuna sweeps over config keys, each trial a pipeline run.

runner.py is the command; spec.py reads a sweep file; space.py expands its parameters; trials.py plans
trials; launch.py runs them (locally or as a SLURM array); state.py keeps the resumable record;
report.py writes the table and plots; wandb_export.py writes a wandb sweep file.
"""
