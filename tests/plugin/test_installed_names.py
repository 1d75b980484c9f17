"""Installed, the distribution neither shadows nor is shadowed by a project's own packages.

A user's project with its own ``mocks``, ``contracts`` and ``harness`` packages (common names)
runs ``python -m pytest`` from its root, where its folders come first on ``sys.path``, with this
plugin installed and active.
"""

from __future__ import annotations

import pytest


def test_a_project_with_its_own_mocks_contracts_and_harness_packages(pytester: pytest.Pytester) -> None:
    for name in ("mocks", "contracts", "harness"):
        package = pytester.mkpydir(name)
        (package / "__init__.py").write_text(f"WHOSE = 'the user\\'s {name}'\n")
    (pytester.path / "mocks" / "fake_db.py").write_text("def rows():\n    return [1, 2, 3]\n")
    pytester.makepyfile(test_project='''
        import httpx

        import contracts
        import harness
        import mocks
        from mocks.fake_db import rows


        def test_its_own_packages_are_its_own():
            assert (mocks.WHOSE, contracts.WHOSE, harness.WHOSE) == (
                "the user's mocks", "the user's contracts", "the user's harness")
            assert rows() == [1, 2, 3]


        def test_the_plugin_fixture_still_works(cloudsway_mock):
            created = httpx.post(cloudsway_mock.url + "/v2/ai/ep/images/generations",
                                 headers=cloudsway_mock.headers, json={"prompts": "a fox"})
            assert created.status_code == 200 and created.json()["status"] == "success"


        def test_ours_live_under_one_distinct_name():
            from imagegen_conformance.mocks import MockServer
            import imagegen_conformance.mocks as ours
            assert ours is not mocks and MockServer.__module__.startswith("imagegen_conformance.")
    ''')
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    result = pytester.runpytest_subprocess("-q", timeout=120)  # python -m pytest, from the project root
    result.assert_outcomes(passed=3)
