"""Ray Serve deployments, one app: the ``CascadeRouter`` ingress, ``ExpertServer``, the ``BudgetHolder``
every router shares, and ``SmallDetector`` for heavy small tiers.

Start it with :func:`deployments.app.run`, ``cascade serve CONFIG`` or
``serve run deployments/configs/spamassassin.yaml``. Importing this package imports nothing heavy;
:mod:`deployments.app` imports Ray.
"""
