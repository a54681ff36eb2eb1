"""Many runs: plan a heuristic x grid x seed sweep and run it locally or on SLURM.

Never imports ``utils.loop``: a sweep starts runs as processes and reads their files.
"""
