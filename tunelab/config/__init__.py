"""The run config: typed sections, the run types, YAML + overrides, and the error messages."""

from tunelab.config.run import (
                                RUN_CONFIG,
                                SEARCH_KEY,
                                TASKS,
                                CausalLMRun,
                                ClassificationPart,
                                ClassificationRun,
                                MaskedLMRun,
                                MultiTaskRun,
                                RunConfig,
                                TaskPart,
                                TokenClassificationPart,
                                TokenClassificationRun,
                                TranslationRun,
                                dump_config,
                                load_config,
                                validate,
)
from tunelab.config.sections import (
                                ColumnMap,
                                ConllDataConfig,
                                DataConfig,
                                EarlyStopping,
                                Generation,
                                MaskedLMDataConfig,
                                MethodConfig,
                                ModelConfig,
                                SftDataConfig,
                                TrainConfig,
                                TranslationDataConfig,
)

__all__ = ["RUN_CONFIG", "SEARCH_KEY", "TASKS", "CausalLMRun", "ClassificationPart",
           "ClassificationRun", "MaskedLMRun", "MultiTaskRun", "RunConfig", "TaskPart",
           "TokenClassificationPart", "TokenClassificationRun", "TranslationRun", "dump_config",
           "load_config", "validate", "ColumnMap", "ConllDataConfig", "DataConfig",
           "EarlyStopping", "Generation", "MaskedLMDataConfig", "MethodConfig", "ModelConfig",
           "SftDataConfig", "TrainConfig", "TranslationDataConfig"]
