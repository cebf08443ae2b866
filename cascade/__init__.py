"""cascade: route samples between a cheap detector and a large model under a budget.

Importing this package is cheap: it pulls in neither Ray, vLLM, torch nor transformers.
Those load inside the backends that need them.
"""

__version__ = "0.1.0"
