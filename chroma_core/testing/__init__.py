"""The store conformance suite, shipped with the core as a pytest plugin.

A store package proves its store by running the suite against it from its own tests folder,
as the built-in stores do (``plugins/store_sqlite/tests``)::

    # tests/test_mystore_conformance.py
    from chroma_core.testing import StoreConformance

    class TestMyStoreConformance(StoreConformance):
        store_name = "mystore"

        def store_environment(self, path):
            # settings the store needs besides CHROMA_STORE and CHROMA_PATH, if any
            return {"CHROMA_MYSTORE_URL": "..."}

Every test opens the store as the service does (the ``chroma_open_store`` hook of the
installed plugins, with settings made from ``CHROMA_STORE``, a fresh data directory and
:meth:`StoreConformance.store_environment`), so the package only has to be installed.
Tests of an optional capability (:data:`chroma_core.store.CAPABILITIES`) the store lacks are
skipped, naming it. A class that leaves ``store_name`` unset takes the store named by
``pytest --chroma-store NAME``, an option the plugin module :mod:`chroma_core.testing.plugin`
adds to every pytest run where Chroma is installed (the ``pytest11`` entry point; load it
with ``-p chroma_core.testing.plugin`` where entry points are off).
"""

import pytest

# before the import: pytest shows the values in a failed assert of the suite only for
# modules registered for rewriting, and it is installed code, not a test file
pytest.register_assert_rewrite("chroma_core.testing.conformance")

from chroma_core.testing.conformance import StoreConformance  # noqa: E402

__all__ = ["StoreConformance"]
