"""netsec_tasks: the pipeline steps of netsec as plain, importable functions.

Every step takes typed inputs (the validated :class:`~netsec_tasks.config.PipelineConfig`, a
:class:`~netsec_tasks.records.RunContext` and the records of earlier steps) and returns a small
artifact record (URIs, counts, metrics, hashes) that is safe to pass through Airflow's XCom.
Nothing in this package imports Airflow; the DAG in ``dags/`` only wires these functions.
"""

__version__ = "0.1.0"
