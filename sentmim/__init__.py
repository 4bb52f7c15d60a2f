"""sentmim: sentence-level latent variable language models (sentenceMIM, text VAE, AE) on Hugging Face.

Importing the package registers the model with the transformers Auto classes, so
`AutoConfig/AutoModel/AutoModelForSeq2SeqLM.from_pretrained(folder)` work after `import sentmim`, and the demo's
corpus under the dataset name "builtin" (`--dataset builtin`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from . import metrics, objectives
from .apps import corpus as _builtin_corpus
from .configuration import SentenceMIMConfig
from .modeling import SentenceMIMModel, SentenceMIMOutput
from .pipeline import SentenceMIMPipeline

AutoConfig.register(SentenceMIMConfig.model_type, SentenceMIMConfig, exist_ok=True)
AutoModel.register(SentenceMIMConfig, SentenceMIMModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(SentenceMIMConfig, SentenceMIMModel, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "SentenceMIMConfig", "SentenceMIMModel", "SentenceMIMOutput", "SentenceMIMPipeline", "metrics", "objectives",
]
