"""The application builder: ``serve run serve.app:build_app bundle=outputs/bundle`` or ``serve/config.yaml``.

    Ingress (FastAPI) ──► Encoder   (detect, align, invert; references stored by content id)
                      ──► Animator  (speech → landmarks)
                      ──► Renderer  (landmarks + edits → frames, @serve.batch across requests)

Each deployment scales on its own (``autoscaling_config``) with its own queue limits; GPUs go to the
deployments given ``num_gpus`` (the Renderer first, the Encoder next).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from fet import storage
from fet.bundle import check_bundle, held_out_aurocs
from fet.editor import load_attribute_classifier, load_attribute_library
from serve.deployments import Animator, Encoder, Renderer
from serve.ingress import Ingress
from serve.options import AppOptions, Scaling


def _deployment_options(s: Scaling) -> dict[str, Any]:
    actor = {"num_cpus": s.num_cpus} | ({"num_gpus": s.num_gpus} if s.num_gpus else {})
    return {
        "autoscaling_config": {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                               "target_ongoing_requests": s.target_ongoing_requests},
        "max_ongoing_requests": s.max_ongoing_requests,
        "max_queued_requests": s.max_queued_requests,
        "ray_actor_options": actor,
    }  # fmt: skip


def build_app(args: AppOptions) -> Application:
    """Typed builder: Serve validates ``args`` (a dict from the CLI or config) against ``AppOptions``."""
    if isinstance(args, dict):
        args = AppOptions(**args)
    # the replicas run in the directory the cluster's Ray was started in, not in this one
    paths = ("bundle", "state_dir", "api_key_file")
    args = args.model_copy(update={k: storage.absolute(getattr(args, k)) for k in paths})
    options = args.model_dump()
    aurocs = held_out_aurocs(check_bundle(args.bundle))  # first: names a missing bundle or every missing file
    library = load_attribute_library(args.bundle)
    trained = load_attribute_classifier(args.bundle).trained_attributes
    encoder = Encoder.options(**_deployment_options(args.encoder)).bind(options)
    animator = Animator.options(**_deployment_options(args.animator)).bind(options)
    renderer = Renderer.options(**_deployment_options(args.renderer)).bind(options)
    return Ingress.options(**_deployment_options(args.ingress)).bind(encoder, animator, renderer, options,
                                                                     library.settings(), trained, aurocs)  # fmt: skip


def run(args: AppOptions, port: int = 8000, name: str = "faceedittalker", blocking: bool = False):
    """Start the application on a running (or local) Ray: ``serve.run`` with HTTP on 127.0.0.1:``port``."""
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return serve.run(build_app(args), name=name, route_prefix="/", blocking=blocking)
