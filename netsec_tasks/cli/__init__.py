"""The ``netsec`` command.

    netsec run [--source file|mongo] [--source-path P] [--force-retrain]   all steps, in process
    netsec reconcile                      end stale runs, decide left-over model versions
    netsec rollback [--to VERSION]        Production back to an earlier version (alias + tags)
    netsec promote --challenger [--reason R]   the challenger (registry.shadow) becomes Production
    netsec reject --challenger [--reason R]    the challenger's shadow ends; Production stays
    netsec push-data CSV                  load a CSV into the Mongo collection (idempotent)
    netsec validate FILE                  schema + data-quality checks, report and quarantine
    netsec drift REF CUR                  drift report between two files
    netsec predict CSV [--out OUT] [--invalid refuse|flag]   predictions of the Production model
    netsec evaluate FILE [--model models:/NAME/VERSION] [--out DIR]   metrics on a labelled file
    netsec make-sample [--rows N] [--dataset D] [--missing 0.02]   a deterministic synthetic data set
    netsec fetch-dataset [--out P]        the real UCI data from OpenML (needs internet)
    netsec serve                          the FastAPI serving service (added by the serving package)
    netsec config [--describe]            the effective configuration (file + env), with each key's doc

Global options (``--config``, ``--set KEY=VALUE``, ``-v``) go before or after the command.
Errors in the input or the environment print one line naming the problem and exit non-zero
(2 bad input/config, 3 service unavailable, 143 SIGTERM), with no traceback. Exit 1: ``validate``
failed, or ``drift --fail-on-drift`` found drift. Exit 4 (:data:`NOT_JUDGED`): ``drift`` or
``evaluate`` left out more than ``validation.max_invalid_share`` of a file's rows as breaking the
input contract, so its figures describe the rows left, not the file: the first line says so.

Modules: :mod:`.common` (config from the command line, outputs), :mod:`.pipeline_commands`,
:mod:`.data_commands`, :mod:`.model_commands`, :mod:`.config_command` (one function a
subcommand) and :mod:`.app` (the parser and :func:`main`; the ``netsec`` entry point).
"""

from netsec_tasks.cli.app import build_parser, main, plugin_commands
from netsec_tasks.cli.common import NOT_JUDGED

__all__ = ["NOT_JUDGED", "build_parser", "main", "plugin_commands"]
