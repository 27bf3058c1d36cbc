"""Pytest fixtures shared by test_deploy_manifests.py and test_deploy_probes.py: the parsed deployment files."""

from __future__ import annotations

import pytest

import compose_checks as cc
import deploy_checks as dc


@pytest.fixture(scope="module")
def kubernetes() -> list[dc.Manifest]:
    """The manifests kustomization.yaml lists, parsed; a file that does not parse or is not listed fails here."""
    manifests, _, problems = dc.load_kubernetes()
    assert problems == [], "\n".join(problems)
    return manifests


@pytest.fixture(scope="module")
def compose() -> dict:
    return cc.load_compose()
