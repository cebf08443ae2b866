"""Ray Serve deployments: ``SmallDetector``, ``ExpertServer`` and the ``CascadeRouter`` ingress, one app.

Start it with :func:`deployments.app.run`, ``cascade serve CONFIG`` or
``serve run deployments/configs/spamassassin.yaml``. Importing this package imports nothing heavy;
:mod:`deployments.app` imports Ray.
"""
