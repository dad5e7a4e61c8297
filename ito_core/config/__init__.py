"""Run configuration: ``schema`` (one dataclass per Hydra group), ``validation`` (every value checked before any
work, naming the key and the fix) and ``loading`` (Hydra composition -> a validated ``RunConfig``)."""

from ito_core.config.loading import (
    CONFIG_DIR,
    as_dict,
    check_known_keys,
    config_hash,
    hydra_sweeper_params,
    load_config,
    load_grid,
    override_key,
    to_run_config,
    unknown_keys,
)
from ito_core.config.registry import EVAL_LAYOUTS
from ito_core.config.schema import (
    PLOT_METRICS,
    ClusterConfig,
    DataConfig,
    DeepSpeedConfig,
    EvalConfig,
    ItoConfig,
    LossConfig,
    MethodConfig,
    ModelConfig,
    PlanConfig,
    ReportConfig,
    RunConfig,
    StorageConfig,
    TrainConfig,
    WandbConfig,
    eval_executor,
    eval_task_sets,
    fuses,
)
from ito_core.config.validation import (
    EMBEDDED_EVAL_SETS,
    EMBEDDED_SOURCES,
    accumulation_steps,
    check_job_folder,
    config_warnings,
    validate,
    validate_cluster,
)

__all__ = ["CONFIG_DIR", "EMBEDDED_EVAL_SETS", "EMBEDDED_SOURCES", "EVAL_LAYOUTS", "PLOT_METRICS", "ClusterConfig",
           "DataConfig", "DeepSpeedConfig", "EvalConfig", "ItoConfig", "LossConfig", "MethodConfig", "ModelConfig",
           "PlanConfig", "ReportConfig", "RunConfig", "StorageConfig", "TrainConfig", "WandbConfig",
           "accumulation_steps", "as_dict", "check_job_folder", "check_known_keys", "config_hash", "config_warnings",
           "eval_executor", "eval_task_sets", "fuses", "hydra_sweeper_params", "load_config", "load_grid",
           "override_key", "to_run_config", "unknown_keys", "validate", "validate_cluster"]
