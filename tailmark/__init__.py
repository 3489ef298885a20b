"""tailmark: an open-loop inference-serving benchmark.

Subpackages map to the repository's top-level folders (see DESIGN.md): ``tailmark.protos``,
``tailmark.server``, ``tailmark.models``, ``tailmark.client``, ``tailmark.traces``,
``tailmark.training``, ``tailmark.deploy`` and ``tailmark.bench``.
"""

__version__ = "0.1.0"
