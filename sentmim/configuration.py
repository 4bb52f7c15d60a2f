"""SentenceMIMConfig: every hyper-parameter of a sentence latent variable model, saved as config.json.

One config covers every architecture (GRU, Transformer, a pretrained Hugging Face backbone) and the three objectives
(sentenceMIM, text VAE, AE), so a comparison between objectives changes one field and nothing else.
"""

from transformers import AutoConfig, PreTrainedConfig

ARCHITECTURES = ("gru", "transformer", "backbone")
OBJECTIVES = ("mim", "vae", "ae")
POSITION_EMBEDDINGS = ("learned", "sinusoidal")
POOLINGS = ("mean", "weighted_mean", "last")
OVERLONG = ("drop", "truncate")


class SentenceMIMConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: number of tokens, specials included.
        architecture: `"gru"` (the sentenceMIM paper's model), `"transformer"`, or `"backbone"` (a pretrained Hugging
            Face LM; docs/backbones.md). Default: "backbone" when `backbone_config` is given, else "gru".
        objective: `"mim"` (sentenceMIM), `"vae"` (text VAE) or `"ae"` (deterministic auto-encoder).
        embedding_size: token embedding width, shared by encoder and decoder.
        hidden_size: GRU state size, or the Transformer's model width.
        num_layers: GRU layers, or Transformer blocks, in each of encoder and decoder.
        latent_size: dimension of z.
        num_attention_heads, intermediate_size: Transformer only (`intermediate_size` defaults to 4 x hidden).
        max_position_embeddings: longest sentence (BOS and EOS included) the model takes: the length limit training
            used, and the number of positions a Transformer has.
        overlong: what training did with longer sentences, `"drop"` or `"truncate"` (EOS kept); evaluation treats
            them the same way.
        position_embedding_type: `"learned"` or `"sinusoidal"` (Transformer only).
        num_memory_slots: z is projected to this many memory vectors: the Transformer decoder and an encoder-decoder
            backbone's decoder cross-attend to them; a decoder-only backbone reads them as a prefix.
        reverse_input: the GRU encoder reads each sentence backwards (a common seq2seq trick).
        dropout: dropout on embeddings and decoder outputs (and inside Transformer blocks).
        embedding_dropout: extra dropout on the decoder's input embeddings only (the sentenceMIM demo's
            `--embedding_dropout`, 0.5 there): weaker teacher forcing makes the decoder lean on z.
        word_dropout: probability of replacing each decoder input token after BOS by UNK (Bowman et al. 2016).
        tie_word_embeddings: tie the output layer to the token embedding (adds a hidden -> embedding projection).
        logvar_min: floor on log-variance; the MIM entropy term is unbounded without it.
        backbone_config: the backbone's own config (a `PreTrainedConfig`, or its dict with `model_type`), embedded in
            config.json so that a saved model rebuilds offline; it holds the backbone's dropout settings.
        backbone_name_or_path: where the backbone's weights came from (a record only; loading never reads it).
        backbone_pooling: how the backbone's final states become the posterior's input (`"mean"`, `"weighted_mean"`
            or `"last"`; docs/backbones.md). Default: "mean" (encoder-decoder) or "weighted_mean" (decoder-only).
        freeze_backbone: train only the latent layers; the backbone's weights get no gradient.
    """

    model_type = "sentmim"

    def __init__(
        self,
        vocab_size: int = 10000,
        architecture: str | None = None,
        objective: str = "mim",
        embedding_size: int = 300,
        hidden_size: int = 512,
        num_layers: int = 1,
        latent_size: int = 128,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        max_position_embeddings: int = 256,
        overlong: str = "drop",
        position_embedding_type: str = "learned",
        num_memory_slots: int = 4,
        reverse_input: bool = False,
        dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        word_dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        logvar_min: float = -10.0,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        bos_token_id: int = 2,
        eos_token_id: int = 3,
        decoder_start_token_id: int | None = None,
        is_encoder_decoder: bool = True,
        backbone_config: PreTrainedConfig | dict | None = None,
        backbone_name_or_path: str | None = None,
        backbone_pooling: str | None = None,
        freeze_backbone: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.backbone_config = _as_backbone_config(backbone_config)
        self.backbone_name_or_path = backbone_name_or_path
        self.freeze_backbone = freeze_backbone
        if architecture is None:
            architecture = "gru" if self.backbone_config is None else "backbone"
        if backbone_pooling is None and self.backbone_config is not None:
            backbone_pooling = "mean" if self.backbone_config.is_encoder_decoder else "weighted_mean"
        self.backbone_pooling = backbone_pooling
        self.architecture = architecture
        self.objective = objective
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.latent_size = latent_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.overlong = overlong
        self.position_embedding_type = position_embedding_type
        self.num_memory_slots = num_memory_slots
        self.reverse_input = reverse_input
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout
        self.word_dropout = word_dropout
        self.tie_word_embeddings = tie_word_embeddings
        self.logvar_min = logvar_min
        self.initializer_range = initializer_range
        self.unk_token_id = unk_token_id
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=bos_token_id if decoder_start_token_id is None else decoder_start_token_id,
            is_encoder_decoder=is_encoder_decoder,
            **kwargs,
        )
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first invalid field (called on construction and on load)."""

        def fail(field: str, problem: str) -> None:
            raise ValueError(f"SentenceMIMConfig.{field}={getattr(self, field)!r}: {problem}")

        for field, choices in (
            ("architecture", ARCHITECTURES),
            ("objective", OBJECTIVES),
            ("position_embedding_type", POSITION_EMBEDDINGS),
            ("overlong", OVERLONG),
        ):
            if getattr(self, field) not in choices:
                fail(field, f"must be one of {', '.join(choices)}")
        for field in ("vocab_size", "embedding_size", "hidden_size", "num_layers", "latent_size",
                      "num_attention_heads", "intermediate_size", "max_position_embeddings", "num_memory_slots"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(field, "must be an integer >= 1")
        if self.architecture == "transformer" and self.hidden_size % self.num_attention_heads:
            fail("hidden_size", f"must be divisible by num_attention_heads={self.num_attention_heads}")
        for field in ("pad_token_id", "unk_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                fail(field, f"must be a token id in [0, vocab_size={self.vocab_size})")
        if len({self.pad_token_id, self.bos_token_id, self.eos_token_id}) < 3:
            fail("pad_token_id", "pad, bos and eos token ids must all differ")
        for field in ("dropout", "embedding_dropout", "word_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                fail(field, "must be in [0, 1)")
        if (self.architecture == "backbone") != (self.backbone_config is not None):
            fail("architecture", "a backbone_config goes with architecture='backbone', and only with it")
        if self.architecture == "backbone":
            if self.backbone_pooling not in POOLINGS:
                fail("backbone_pooling", f"must be one of {', '.join(POOLINGS)}")
            backbone_vocab_size = getattr(self.backbone_config.get_text_config(), "vocab_size", None)
            if backbone_vocab_size is not None and backbone_vocab_size != self.vocab_size:
                fail("vocab_size", f"must equal the backbone's vocab_size={backbone_vocab_size}")
            for field in ("dropout", "embedding_dropout"):
                if getattr(self, field):
                    fail(field, "a backbone uses the dropout rates of its own config: set them in backbone_config")


def _as_backbone_config(backbone_config: PreTrainedConfig | dict | None) -> PreTrainedConfig | None:
    """The backbone's config object; a dict (as read from config.json) names its class by `model_type`.

    Only transformers' own model types are accepted: sentmim never runs model code shipped in a folder."""
    if backbone_config is None or isinstance(backbone_config, PreTrainedConfig):
        return backbone_config
    settings = dict(backbone_config)
    model_type = settings.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **settings)
    except ValueError:
        raise ValueError(
            f"SentenceMIMConfig.backbone_config: model_type={model_type!r} is not a model type of this transformers "
            "installation; upgrade transformers (sentmim never runs model code shipped with a model)"
        ) from None
