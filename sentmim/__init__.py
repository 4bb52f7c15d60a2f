"""sentmim: sentence-level latent variable language models (sentenceMIM, text VAE, AE) on Hugging Face.

Importing the package registers the model with the transformers Auto classes, so
`AutoConfig/AutoModel/AutoModelForSeq2SeqLM.from_pretrained(folder)` work after `import sentmim`; SentenceMIMPipeline
as the pipeline task "sentence-reconstruction", so `transformers.pipeline("sentence-reconstruction", model=folder)`
works too; and the demo's corpus under the dataset name "builtin" (`--dataset builtin`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from . import metrics, objectives
from .apps import corpus as _builtin_corpus
from .configuration import SentenceMIMConfig
from .model_folder import AutoSentenceMIMModel
from .modeling import SentenceMIMModel, SentenceMIMOutput
from .pipeline import TASK, SentenceMIMPipeline

AutoConfig.register(SentenceMIMConfig.model_type, SentenceMIMConfig, exist_ok=True)
AutoModel.register(SentenceMIMConfig, SentenceMIMModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(SentenceMIMConfig, SentenceMIMModel, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=SentenceMIMPipeline, pt_model=AutoSentenceMIMModel)

__version__ = "0.1.0"
__all__ = [
    "SentenceMIMConfig", "SentenceMIMModel", "SentenceMIMOutput", "SentenceMIMPipeline", "metrics", "objectives",
]
