"""`python -m ray_jobs.train_stage1 --config F [key=value ...]`: ``ray_jobs.train`` with stage=stage1."""

from ray_jobs.train import stage_main

if __name__ == "__main__":
    stage_main("stage1")
