"""The Serve application's options: a misspelt or unknown one is refused by name, not silently ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.options import AppOptions


def test_an_unknown_option_is_refused_by_name():
    assert AppOptions(bundle="b", job_ttl_seconds=60, encoder={"max_replicas": 3}).encoder.max_replicas == 3
    with pytest.raises(ValidationError, match="job_ttl_secs"):
        AppOptions(bundle="b", job_ttl_secs=60)
    with pytest.raises(ValidationError, match=r"encoder\.max_replica\b"):
        AppOptions(bundle="b", encoder={"max_replica": 3})
