"""`python -m ray_jobs.train_stage2 --config F [key=value ...]`: ``ray_jobs.train`` with stage=stage2."""

from ray_jobs.train import stage_main

if __name__ == "__main__":
    stage_main("stage2")
