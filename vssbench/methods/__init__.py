"""The video methods behind one interface (:mod:`vssbench.methods.base`).

Importing this package registers the built-in methods, one module each; methods of other packages
register through the ``vssbench.methods`` entry-point group or ``bench --plugin MODULE``
(docs/your-method.md).
"""

from vssbench.methods import accel, cffm, dcfm, dff, mpvss, mrcfa, perframe, stt, tfc  # noqa: F401  (each registers itself)
