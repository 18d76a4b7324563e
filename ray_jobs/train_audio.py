"""`python -m ray_jobs.train_audio --config F [key=value ...]`: ``ray_jobs.train`` with stage=audio."""

from ray_jobs.train import stage_main

if __name__ == "__main__":
    stage_main("audio")
