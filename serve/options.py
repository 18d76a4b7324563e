"""Typed arguments of the Serve application (``serve run serve.app:build_app bundle=...`` or the
``args:`` of ``serve/config.yaml``). Limits are enforced by the ingress before any model runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Scaling(BaseModel):
    """One deployment's replicas and queue (Ray Serve ``autoscaling_config`` and request limits)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not a silent default

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(64, ge=-1)  # beyond it callers get 503 + Retry-After
    num_cpus: float = Field(0.25, ge=0)  # fractional on the embedded default
    num_gpus: float = Field(0.0, ge=0)


class AppOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bundle: str = Field(..., description="bundle directory or s3:// URI (ray_jobs.export_bundle)")
    state_dir: str = Field("outputs/serve_state", description="encoded references and jobs (local or s3://)")
    device: str = "cpu"
    steps: int | None = Field(None, ge=1, le=1000, description="DDIM steps (default: the bundle's)")
    max_payload_mb: float = Field(20.0, gt=0)
    max_image_pixels: int = Field(4096 * 4096, gt=0)
    max_audio_seconds: float = Field(60.0, gt=0)
    sync_max_seconds: float = Field(10.0, gt=0, description="longer audio on /v1/generate becomes a job")
    job_ttl_seconds: int = Field(3600, gt=0, description="how long a job and its result are kept after its last change")
    reference_ttl_seconds: int = Field(
        7 * 24 * 3600, gt=0, description="how long an encoded reference is kept after its last use"
    )
    sweep_seconds: float = Field(60.0, gt=0, description="how often new work has expired jobs and references deleted")
    job_stale_seconds: int = Field(
        120,
        gt=0,
        description="a running job silent this long: its replica stopped "
        "(a live one saves the job every quarter of this)",
    )
    job_restarts: int = Field(2, ge=0, description="times such a job is run again from its stored speech")
    retry_after_seconds: int = Field(2, ge=1)
    replica_retries: int = Field(2, ge=0, description="times a call is sent again when the replica answering it dies")
    api_key_env: str | None = Field("FET_API_KEY", description="environment variable holding the API key")
    api_key_file: str | None = Field(None, description="file holding the API key (wins over the variable)")
    render_batch: int = Field(16, ge=1, description="frames per denoiser batch across concurrent requests")
    render_wait_s: float = Field(0.02, ge=0)
    ingress: Scaling = Scaling(max_replicas=2, max_ongoing_requests=32, max_queued_requests=128)
    encoder: Scaling = Scaling()
    animator: Scaling = Scaling()
    renderer: Scaling = Scaling(max_ongoing_requests=64, max_queued_requests=1024)
