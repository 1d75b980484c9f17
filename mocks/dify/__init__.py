"""Dify Workflow API (Service API): run a workflow blocking or streaming, stop it, read it back.

Seed 004 (an image-generation workflow on a self-hosted Dify) and shared/reference/providers.md §5.
The workflow is data (``contracts/dify/workflow.yaml``, or your own file named by
``IMAGEGEN_DIFY_WORKFLOW``): its input form, its nodes with their timings and outputs.

``_workflow.py`` reads and checks the workflow; ``_runs.py`` is a run over time (timeline,
blocking answer, event stream, bodies, signed file links); ``_provider.py`` the routes, Dify's
envelope and refusals, and uploads.
"""

from __future__ import annotations

from ._provider import DifyProvider
from ._workflow import WORKFLOW_ENV, Node, Workflow, WorkflowError

__all__ = ["WORKFLOW_ENV", "DifyProvider", "Node", "Workflow", "WorkflowError"]
