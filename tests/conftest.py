"""Test-suite root. Shared helpers live in modules of their own (``gltf_builder.py``), not here:
several test folders have a ``conftest.py``, so ``from conftest import …`` would be ambiguous.
"""
