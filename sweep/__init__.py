"""The machinery of a sweep, one subpackage per stage (docs/development.md, "Layout"; docs/architecture.md).

From the bottom: ``errors`` and ``budget`` (shared), ``data``, ``spec``,
``oracle``, ``run``, ``results``, then ``tuning`` and ``report``; the commands
(``python -m sweep.launch``, ``sweep.report``, ``sweep.compare``,
``sweep.estimator_check``, ``sweep.pretrain_tiny``) sit on top.
"""
