"""Ray Serve layer: the FaceEditTalker HTTP service over ``fet`` (``serve run serve.app:build_app``)."""
